"""Bodies read from an open file in Python: :class:`Loaded` and :class:`ByteRanges`.

:func:`~wsgipipe.file_response` picks them when zero-copy cannot apply: a
small file (read at once, the descriptor freed before the app returns) and
several ranges (``multipart/byteranges``, RFC 9110 §14.6).
"""

from __future__ import annotations

import os
from collections import deque
from typing import IO, TYPE_CHECKING

from ._body import Body
from ._errors import FileChanged

if TYPE_CHECKING:
    from . import _http as http

__all__ = ["ByteRanges", "Loaded"]


class Loaded(Body):
    """A body of at most one chunk, read at once so the file is closed before the app returns.

    Used when the server offers no zero-copy path (or it is turned off): one
    ``pread`` is cheaper than streaming, and the descriptor is not held while
    the client reads. A file that shrank since its fstat raises
    :class:`FileChanged` on the first ``next()``, so the server aborts.
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
            raise error
        return self._emit(data)


class ByteRanges(Body):
    """A ``multipart/byteranges`` body read from one open file with ``pread``.

    Sends exactly the planned length: the part headers, each range, the
    trailer. A file that shrank under it raises :class:`FileChanged` so that
    the server aborts instead of sending a short body. The file is released
    at the end of the body or at ``close()``, whichever comes first.
    """

    def __init__(self, file: IO[bytes], plan: http.Multipart, *, chunk_size: int) -> None:
        super().__init__()
        self.via = "python"
        self.name = str(getattr(file, "name", "") or "")
        self._file: IO[bytes] | None = file
        self._fd = file.fileno()
        # Literal bytes or (position, length) reads, planned up front so that
        # no cleanup ever waits behind a generator's yield.
        self._steps: deque[bytes | tuple[int, int]] = deque()
        for head, rng in plan.parts:
            self._steps.append(head)
            for pos in range(rng.start, rng.stop, chunk_size):
                self._steps.append((pos, min(chunk_size, rng.stop - pos)))
        self._steps.append(plan.trailer)

    def __next__(self) -> bytes:
        if self._closed or self.outcome is not None:
            raise StopIteration
        if not self._steps:
            self._finish()
            self._release()
            raise StopIteration
        step = self._steps.popleft()
        try:
            chunk = step if isinstance(step, bytes) else self._read(*step)
        except BaseException as exc:
            self._next_failed(exc)
            self._release()
            raise
        return self._emit(chunk)

    def _read(self, pos: int, length: int) -> bytes:
        data = os.pread(self._fd, length, pos)
        if len(data) < length:
            raise FileChanged(self.name, pos + length, pos + len(data))
        return data

    def _release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
