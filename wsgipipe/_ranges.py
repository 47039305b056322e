"""The ``Range`` rules for serving files (RFC 9110 §14): which bytes, in how many parts.

Pure functions, no WSGI and no I/O; parsing is werkzeug's
(``parse_range_header``). :mod:`wsgipipe._http` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from werkzeug.http import parse_range_header

from ._errors import RangeNotSatisfiable

__all__ = ["COALESCE_GAP", "MAX_RANGES", "ByteRange", "Multipart", "byte_ranges", "multipart"]

#: More range specs than this in one header are refused (the whole file is
#: sent instead): RFC 9110 §14.3 lets a server ignore "many small ranges".
MAX_RANGES = 32

#: Ranges closer than this are merged into one part: a gap this small costs
#: less than the part headers a separate part would need (RFC 9110 §14.3).
COALESCE_GAP = 80


class ByteRange(NamedTuple):
    """One satisfiable byte range, ``start`` inclusive, ``stop`` exclusive."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        # RFC 9110 §14.4: last-pos is inclusive.
        return f"bytes {self.start}-{self.stop - 1}/{size}"


def byte_ranges(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges to send for a ``Range`` header, or None to send everything.

    None means: no header, a malformed or unknown-unit one (RFC 9110 §14.2:
    the server ignores what it cannot parse), too many specs, or an empty
    representation. A range covering every byte still gets a 206, as from
    nginx: old Safari needs a 206 for ``bytes=0-`` (werkzeug#1704). Raises
    :class:`RangeNotSatisfiable` when no range overlaps the file (§14.1.1).
    The result is sorted, overlapping and nearby ranges merged, so its total
    never exceeds ``size``.
    """
    if not header or size <= 0 or header.count(",") >= MAX_RANGES:
        return None
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes":
        return None
    ranges = [r for r in (_resolve(start, stop, size) for start, stop in parsed.ranges) if r]
    if not ranges:
        raise RangeNotSatisfiable(size)
    return _coalesce(ranges)


def _resolve(start: int, stop: int | None, size: int) -> ByteRange | None:
    if start < 0:  # suffix range "-N": the last N bytes (§14.1.2)
        return ByteRange(max(size + start, 0), size)
    if start >= size:  # unsatisfiable on its own; others may still be
        return None
    return ByteRange(start, size if stop is None else min(stop, size))


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    # §14.3 allows coalescing; merging overlaps is what bounds the body size.
    ranges.sort()
    merged = [ranges[0]]
    for current in ranges[1:]:
        last = merged[-1]
        if current.start <= last.stop + COALESCE_GAP:
            merged[-1] = ByteRange(last.start, max(last.stop, current.stop))
        else:
            merged.append(current)
    return merged


class Multipart(NamedTuple):
    """The plan of a ``multipart/byteranges`` body (RFC 9110 §14.6)."""

    content_type: str
    parts: list[tuple[bytes, ByteRange]]
    trailer: bytes
    length: int


def multipart(ranges: Sequence[ByteRange], size: int, part_type: str, boundary: str) -> Multipart:
    """Part headers, trailer and exact Content-Length for several ranges."""
    parts: list[tuple[bytes, ByteRange]] = []
    length = 0
    for index, rng in enumerate(ranges):
        # The CRLF before each boundary after the first belongs to the delimiter.
        head = (
            f"{'' if index == 0 else chr(13) + chr(10)}--{boundary}\r\n"
            f"Content-Type: {part_type}\r\n"
            f"Content-Range: {rng.content_range(size)}\r\n\r\n"
        ).encode("latin-1")
        parts.append((head, rng))
        length += len(head) + rng.length
    trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return Multipart(
        f"multipart/byteranges; boundary={boundary}", parts, trailer, length + len(trailer)
    )
