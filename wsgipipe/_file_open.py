"""Opening a FileStream's source and measuring what it will send.

A path is opened here (never blocking on a FIFO); a file object is taken as
it is. What the stream sends is measured from the descriptor it will read,
so the size, the validators and the bytes all describe one file.
"""

from __future__ import annotations

import io
import os
import stat
from typing import IO, NamedTuple

from ._files import OPEN_FLAGS

__all__ = ["Measured", "fileno_of", "measure", "open_source", "seekable", "sendfile_fd"]

Source = str | os.PathLike[str] | IO[bytes]


class Measured(NamedTuple):
    """Where a stream stands right after opening."""

    remaining: int | None  # bytes left to send; None: read to EOF
    end: int | None  # file position of the last byte + 1, when known
    first: bytes  # a chunk read ahead to learn a pseudo-file's size


def open_source(source: Source) -> IO[bytes]:
    """A binary file for ``source``: a path is opened, a file object is used as is."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    # O_NONBLOCK so that a FIFO cannot hang the worker in open(2); it is
    # cleared right after for whatever we read.
    fd = os.open(source, OPEN_FLAGS)
    try:
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def sendfile_fd(fileno: int | None, st: os.stat_result | None) -> int | None:
    """The descriptor to read with os.read (and sendfile): regular, non-empty files only."""
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
        return fileno
    return None


def measure(
    f: IO[bytes],
    st: os.stat_result | None,
    *,
    offset: int,
    want: int | None,
    chunk_size: int,
) -> Measured:
    """Position ``f`` at ``offset`` and work out how much of it to send.

    ``st`` is the fstat of ``f``'s own descriptor (None without one): never
    a second stat(path) that could see another file.
    """
    regular = st is not None and stat.S_ISREG(st.st_mode)
    if st is not None and regular and st.st_size > 0:
        total: int | None = st.st_size
    elif seekable(f) and not regular:
        total = f.seek(0, os.SEEK_END)  # BytesIO and friends
    else:
        total = None  # pipes, sockets, zero-size /proc files: read to EOF
    if offset:
        if not seekable(f):
            raise ValueError("offset needs a seekable source")
        f.seek(offset)
    elif total is not None and seekable(f):
        f.seek(0)
    if total is not None:
        available = max(total - offset, 0)
        remaining = available if want is None else min(want, available)
        return Measured(remaining, offset + remaining, b"")
    if want is not None or not regular:
        return Measured(want, None, b"")
    # A regular file that reports 0 bytes is either empty or a pseudo-file
    # (/proc, /sys) whose size is only known by reading it. Peek once.
    first = f.read(chunk_size) or b""
    return Measured(None, None, first) if first else Measured(0, offset, b"")


def fileno_of(f: IO[bytes]) -> int | None:
    """``f.fileno()``, or None for objects without a descriptor."""
    try:
        return f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def seekable(f: IO[bytes]) -> bool:
    """``f.seekable()``, False for objects that cannot say."""
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False
