"""ZipStream: a folder, or a list of files, as a zip archive written to the response as it goes.

No temporary file and no seeking: members are stored (not deflated) with a
data descriptor (see :mod:`wsgipipe._zip_format`), so the archive's length
is known before the first byte and goes out as ``Content-Length``. The
archive is a function of the members' names, sizes and times, so it has an
ETag and a ``Range`` can resume it (members before the range are read for
their CRC only, and each CRC is remembered for the file version).

Paths follow :class:`~wsgipipe.Static`'s rules, with its own code: plain
segments only, no hidden names, and every member is checked again on the
descriptor that is read. One member file is open at a time; ``close()``
closes it on every ending.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from . import _http as http
from . import _zip_format as fmt
from ._body import Observed
from ._error_response import error_response, status_line
from ._errors import FileChanged, RangeNotSatisfiable
from ._files import OPEN_FLAGS, StatKey, stat_key
from ._response import precondition
from ._sources import start_body
from ._static import Static
from ._stream import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Member", "ZipStream", "zip_response"]

#: CRC-32s of file versions already read: a resumed download skips them unread.
_CRC_CACHE: dict[StatKey, int] = {}
_CRC_CACHE_LIMIT = 4096


class Member(NamedTuple):
    """One file of the archive: its name there, where it is, and the version listed."""

    name: str
    path: str
    key: StatKey
    mtime: float
    mode: int


class ZipStream(Observed):
    """The zip of ``folder`` (relative to ``root``) or of ``names``, as a WSGI body.

    Raises :class:`FileNotFoundError` for a folder or name that is missing
    or refused by the path rules, and
    :class:`~wsgipipe.ConfigurationError` if ``root`` is not a directory.
    ``start``/``stop`` select a byte range of the archive. ``allow_hidden``
    and ``follow_symlinks`` mean what they mean for :class:`~wsgipipe.Static`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        names: Sequence[str] | None = None,
        *,
        folder: str = "",
        allow_hidden: bool = False,
        follow_symlinks: bool = False,
        start: int = 0,
        stop: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        zip64_at: int = fmt.ZIP64_LIMIT,
    ) -> None:
        rules = Static(root, index=None, allow_hidden=allow_hidden, follow_symlinks=follow_symlinks)
        self.members = _listed(rules, folder, names)
        self.plan = fmt.plan([(m.name, m.key[2], m.mtime, m.mode) for m in self.members], zip64_at)
        self.size = self.plan.size
        self.etag = _etag(self.members, self.size)
        self.last_modified = int(max((m.mtime for m in self.members), default=0))
        stop = self.size if stop is None else min(stop, self.size)
        self.writer = _Writer(self, rules, start, stop, chunk_size, zip64_at)
        super().__init__(self.writer)

    def select(self, start: int, stop: int) -> None:
        """Send only bytes ``[start, stop)`` of the archive (before iteration starts)."""
        self.writer.start, self.writer.stop = start, min(stop, self.size)


def _etag(members: list[Member], size: int) -> str:
    # A strong validator (RFC 9110 §8.8.3): the same bytes whenever the names
    # and the listed file versions (device, inode, size, mtime) are the same.
    listing = "\n".join(f"{m.name}\0{m.key}\0{m.mtime!r}\0{m.mode}" for m in members)
    digest = hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f'"zip-{size:x}-{digest}"'


def _listed(rules: Static, folder: str, names: Sequence[str] | None) -> list[Member]:
    """The members, in a stable order, each opened once to check where it really is.

    A name given in ``names`` that the rules refuse is a FileNotFoundError;
    in a folder, such entries (hidden, or leading out of the root) are
    skipped, as Static would never serve them either.
    """
    base = _checked_name(rules, folder.strip("/")) if folder.strip("/") else ""
    if base is None:
        raise FileNotFoundError(2, "refused folder name", folder)
    top = os.path.join(rules.root, base)
    if names is None:
        _check_folder(rules, top)
        return [m for m in (_member(rules, n, top, strict=False) for n in _walk(rules, top)) if m]
    return [m for m in (_member(rules, n, top, strict=True) for n in names) if m]


def _checked_name(rules: Static, name: str) -> str | None:
    # Static reads PATH_INFO (UTF-8 bytes seen as latin-1), so names go in that way.
    path_info = "/" + name.encode("utf-8", "surrogateescape").decode("latin-1")
    return rules._name(path_info)


def _check_folder(rules: Static, top: str) -> None:
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise FileNotFoundError(2, "not a folder", top) from None
    try:
        if not rules._contained(top, fd):
            raise FileNotFoundError(2, "folder outside the root", top)
    finally:
        os.close(fd)


def _walk(rules: Static, top: str) -> Iterator[str]:
    # Sorted, so that the same tree always makes the same archive (and ETag).
    for here, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if rules.allow_hidden or not d.startswith("."))
        relative = os.path.relpath(here, top)
        for name in sorted(files):
            yield name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"


def _member(rules: Static, name: str, top: str, *, strict: bool) -> Member | None:
    checked = _checked_name(rules, name)
    try:
        if checked is None:
            raise FileNotFoundError(2, "refused name", name)
        path = os.path.join(top, checked)
        fd, st = _open_checked(rules, path)
    except OSError:
        if strict:
            raise
        return None
    os.close(fd)
    return Member(checked, path, stat_key(st), st.st_mtime, st.st_mode)


def _open_checked(rules: Static, path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` as Static would serve it: a regular file, really inside the root."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        # Static's own check, on the descriptor: no race with a swapped symlink.
        if not stat.S_ISREG(st.st_mode) or not rules._contained(path, fd):
            raise FileNotFoundError(2, "not a servable file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


@dataclass(eq=False, repr=False)
class _Writer:
    """The reader behind a ZipStream: the archive's bytes in ``[start, stop)``."""

    archive: ZipStream
    rules: Static
    start: int
    stop: int
    chunk_size: int
    zip64_at: int
    fd: int | None = field(default=None, init=False)  # the one member file open now

    def __post_init__(self) -> None:
        self._pieces = self._produce()

    def __iter__(self) -> _Writer:
        return self

    def __next__(self) -> bytes:
        return next(self._pieces)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        try:
            self._pieces.close()
        finally:
            if fd is not None:
                os.close(fd)

    def _produce(self) -> Generator[bytes, None, None]:
        plan = self.archive.plan
        crcs: list[int] = []
        for entry, member in zip(plan.entries, self.archive.members, strict=True):
            pos = entry.offset
            header = fmt.local_header(entry)
            yield from self._window(pos, header)
            crc = yield from self._data(pos + len(header), entry, member)
            crcs.append(crc)
            yield from self._window(pos + len(header) + entry.size, fmt.descriptor(entry, crc))
            if entry.offset + entry.stored_size >= self.stop:
                return
        pos = plan.central_offset
        for entry, crc in zip(plan.entries, crcs, strict=True):
            record = fmt.central_entry(entry, crc, self.zip64_at)
            yield from self._window(pos, record)
            pos += len(record)
        yield from self._window(pos, plan.end)

    def _window(self, pos: int, data: bytes) -> Iterator[bytes]:
        """The part of ``data`` (found at ``pos`` in the archive) inside the range."""
        low, high = max(self.start - pos, 0), min(self.stop - pos, len(data))
        if low < high:
            yield data if (low, high) == (0, len(data)) else data[low:high]

    def _data(self, pos: int, entry: fmt.Entry, member: Member) -> Generator[bytes, None, int]:
        """A member's bytes in the range; returns its CRC-32 (read, or remembered)."""
        known = _CRC_CACHE.get(member.key)
        if (known is not None and pos + entry.size <= self.start) or pos >= self.stop:
            return known or 0  # before the range (CRC known) or after it (unused)
        fd, st = _open_checked(self.rules, member.path)
        self.fd = fd
        if stat_key(st) != member.key:
            raise FileChanged(member.name, entry.size, st.st_size)
        crc, done = 0, 0
        while done < entry.size and pos + done < self.stop:
            chunk = os.read(fd, min(self.chunk_size, entry.size - done))
            if not chunk:
                raise FileChanged(member.name, entry.size, done)
            crc = zlib.crc32(chunk, crc)
            yield from self._window(pos + done, chunk)
            done += len(chunk)
        self.fd = None
        os.close(fd)
        if done == entry.size:
            _remember(member.key, crc)
        return crc


def _remember(key: StatKey, crc: int) -> None:
    if len(_CRC_CACHE) >= _CRC_CACHE_LIMIT:
        _CRC_CACHE.clear()
    _CRC_CACHE[key] = crc


def zip_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    root: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    folder: str = "",
    filename: str | None = None,
    allow_hidden: bool = False,
    follow_symlinks: bool = False,
) -> Iterable[bytes]:
    """Answer with the zip of ``folder`` under ``root`` (or of ``names``, relative to it).

    A missing or refused path is a 404, as with Static. The response has a
    Content-Length, an ETag and Last-Modified; conditional requests and a
    single ``Range`` are honoured (several ranges get the whole archive).
    """
    try:
        archive = ZipStream(
            root, names, folder=folder, allow_hidden=allow_hidden, follow_symlinks=follow_symlinks
        )
    except OSError:
        # As Static: a name the filesystem refuses (too long, a loop...) is
        # the same 404 as a missing one, never a 500 with a traceback.
        return error_response(environ, start_response, 404)
    name = filename or (os.path.basename(folder.strip("/")) or "archive") + ".zip"
    headers = [
        ("Content-Type", "application/zip"),
        ("ETag", archive.etag),
        ("Last-Modified", http.last_modified(archive.last_modified)),
        ("Accept-Ranges", "bytes"),
        ("Content-Disposition", http.content_disposition(name, as_attachment=True)),
    ]
    try:
        status = _decide(environ, archive, headers)
    except RangeNotSatisfiable as exc:
        archive.close()
        return error_response(environ, start_response, 416, headers=exc.headers)
    if status == 304 or environ.get("REQUEST_METHOD") == "HEAD" or status == 412:
        archive.close()
        if status == 412:
            return error_response(environ, start_response, 412)
        start_response(
            status_line(status), http.not_modified_headers(headers) if status == 304 else headers
        )
        return []
    return start_body(environ, start_response, archive, (status, headers))


def _decide(environ: WSGIEnvironment, archive: ZipStream, headers: list[tuple[str, str]]) -> int:
    """200, 206, 304 or 412 (RFC 9110 §13.2.2); adds the length headers and selects the range."""
    method = environ.get("REQUEST_METHOD", "GET")
    status = precondition(environ, method, archive.etag, archive.last_modified)
    if status != 200:
        return status
    ranges = None
    if http.if_range_matches(environ.get("HTTP_IF_RANGE"), archive.etag, archive.last_modified):
        ranges = http.byte_ranges(environ.get("HTTP_RANGE"), archive.size)
    if ranges is None or len(ranges) != 1:
        headers.append(("Content-Length", str(archive.size)))
        return 200
    [chosen] = ranges
    archive.select(chosen.start, chosen.stop)
    headers.append(("Content-Length", str(chosen.length)))
    headers.append(("Content-Range", chosen.content_range(archive.size)))
    return 206
