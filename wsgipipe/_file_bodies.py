"""Bodies read from an open file in Python: :class:`Loaded` and :class:`ByteRanges`.

:func:`~wsgipipe.file_response` picks them when zero-copy cannot apply: a
small file (read at once, the descriptor freed before the app returns) and
several ranges (``multipart/byteranges``, RFC 9110 §14.6).
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING

from ._body import Body
from ._errors import FileChanged, HTTPError

if TYPE_CHECKING:
    from . import _http as http

__all__ = ["ByteRanges", "Loaded"]


class Loaded(Body):
    """A body of at most one chunk, read at once so the file is closed before the app returns.

    Used when the server offers no zero-copy path (or it is turned off): one
    ``pread`` is cheaper than streaming, and the descriptor is not held while
    the client reads. A file that shrank since its fstat fails the first
    ``next()`` with a 500 :class:`HTTPError` caused by :class:`FileChanged`.
    """

    def __init__(self, fd: int, offset: int, length: int, name: str = "") -> None:
        super().__init__()
        self.via = "python"
        self.name = name
        try:
            self._data: bytes | None = os.pread(fd, length, offset) if length else b""
        finally:
            os.close(fd)
        self._length = length

    def __next__(self) -> bytes:
        if self._closed or self.outcome is not None:
            raise StopIteration
        data, self._data = self._data, None
        if data is None or not self._length:
            self._finish()
            raise StopIteration
        if len(data) < self._length:
            error = FileChanged(self.name, self._length, len(data))
            self._fail(error)
            # Nothing is sent yet: not an OSError, so gunicorn answers 500
            # instead of closing the connection without a word.
            raise HTTPError(str(error)) from error
        return self._emit(data)


class ByteRanges(Body):
    """A ``multipart/byteranges`` body read from one open file with ``pread``.

    Sends exactly the planned length: the part headers, each range, the
    trailer. A file that shrank under it raises :class:`FileChanged` so that
    the server aborts instead of sending a short body. The file is released
    at the end of the body or at ``close()``, whichever comes first.

    Reads are planned as they go: memory and the time to the first byte do
    not grow with the ranges' sizes (``bytes=0-0,200-`` on a 100 GiB file).
    """

    def __init__(self, file: IO[bytes], plan: http.Multipart, *, chunk_size: int) -> None:
        super().__init__()
        self.via = "python"
        self.name = str(getattr(file, "name", "") or "")
        self._file: IO[bytes] | None = file
        self._fd = file.fileno()
        self._chunk_size = chunk_size
        self._parts = iter(plan.parts)  # at most MAX_RANGES part headers
        self._trailer = plan.trailer
        self._pos = self._stop = 0  # what is left of the range being sent

    def __next__(self) -> bytes:
        if self._closed or self.outcome is not None:
            raise StopIteration
        try:
            chunk = self._step()
        except StopIteration:
            self._finish()
            self._release()
            raise
        except BaseException as exc:
            self._next_failed(exc)
            self._release()
            raise
        return self._emit(chunk)

    def _step(self) -> bytes:
        if self._pos < self._stop:
            length = min(self._chunk_size, self._stop - self._pos)
            data = self._read(self._pos, length)
            self._pos += length
            return data
        part = next(self._parts, None)
        if part is not None:
            head, rng = part
            self._pos, self._stop = rng.start, rng.stop
            return head
        if not self._trailer:
            raise StopIteration
        trailer, self._trailer = self._trailer, b""
        return trailer

    def _read(self, pos: int, length: int) -> bytes:
        data = os.pread(self._fd, length, pos)
        if len(data) < length:
            raise FileChanged(self.name, pos + length, pos + len(data))
        return data

    def _release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
