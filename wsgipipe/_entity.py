"""Entity: what a response says about one file version (validators, base headers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _http as http
from ._files import StatKey, stat_key

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable

__all__ = ["Entity", "entity_for"]


@dataclass(frozen=True)
class Entity:
    """What a response says about one file version: validators and base headers.

    ``key`` is ``(st_dev, st_ino, st_size, st_mtime_ns)`` of the descriptor it
    was built from; a cache compares it with a fresh ``fstat`` every request.
    """

    key: StatKey
    etag: str
    modified: int
    content_type: str
    headers: tuple[tuple[str, str], ...]


def entity_for(
    st: os.stat_result, content_type: str, *, tag: str = "", extra: Iterable[tuple[str, str]] = ()
) -> Entity:
    """Build the validators and headers of the file version ``st`` describes."""
    etag = http.etag_for(st.st_size, st.st_mtime_ns, tag)
    modified = int(st.st_mtime)
    headers = (
        ("Content-Type", content_type),
        ("ETag", etag),
        ("Last-Modified", http.last_modified(modified)),
        ("Accept-Ranges", "bytes"),  # RFC 9110 §14.3
        *extra,
    )
    return Entity(stat_key(st), etag, modified, content_type, headers)
