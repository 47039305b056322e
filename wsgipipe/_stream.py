"""FileStream: the file-wrapper iterable and its release-on-every-ending contract.

A :class:`FileStream` is two things at once:

* a WSGI response iterable (a :class:`~wsgipipe.Body`) that reads the
  file in chunks, sends exactly the announced length and releases the file
  at end of file or at ``close()``, whichever comes first;
* a read-only file object (``read``, ``fileno``, ``seek``, ``tell``) that can
  be handed to the server's ``wsgi.file_wrapper``, so that gunicorn sends it
  with ``sendfile(2)`` while wsgipipe still learns how many bytes went out
  and how the transfer ended (:meth:`FileStream.for_server`).
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import IO, TYPE_CHECKING

from ._body import Body, server_wrapper
from ._errors import FileChanged, HTTPError
from ._file_open import Source, fileno_of, measure, open_source, sendfile_fd

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["DEFAULT_CHUNK_SIZE", "FileStream", "server_body"]

#: 64 KiB: large enough that per-chunk Python overhead is noise next to the
#: copy, small enough to keep memory flat with many transfers at once.
DEFAULT_CHUNK_SIZE = 64 * 1024


class FileStream(Body):
    """Stream a file (or a slice of it) as a WSGI response body.

    ``source`` is a path or a binary file object; either way the stream owns
    the file and closes it. Nothing is opened until :meth:`open` is called,
    :attr:`size` is read, or iteration starts, so errors such as
    :class:`FileNotFoundError` surface at one of those points.

    ``offset``/``length`` select a slice (for ``Range`` responses); ``length``
    defaults to the rest of the file. ``zero_copy=False`` keeps the bytes in
    Python even when the server offers ``wsgi.file_wrapper`` (sendfile is
    unsafe on some network and FUSE filesystems).
    """

    def __init__(
        self,
        source: Source,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        zero_copy: bool = True,
    ) -> None:
        super().__init__()
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.zero_copy = zero_copy
        self.offset = offset
        self._want = length
        self._source = source
        self._file: IO[bytes] | None = None
        self._fd: int | None = None  # set only for regular files read with os.read
        self._opened = False
        self._released = False
        self._stat: os.stat_result | None = None
        self._remaining: int | None = None
        self._first = b""
        self._end: int | None = None
        self._pos = offset
        self._iterated = False  # True once read in Python rather than by sendfile
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fsdecode(source)
        else:
            self.name = str(getattr(source, "name", "") or "")

    # -- opening ----------------------------------------------------------
    def open(self) -> FileStream:
        """Open the file and read its metadata from the same descriptor.

        Idempotent. Raises the usual :class:`OSError` subclasses; the stream
        stays safe to ``close()`` afterwards.
        """
        if self._opened:
            return self
        if self._closed:
            raise ValueError("I/O operation on a closed FileStream")
        self._opened = True
        self._file = open_source(self._source)
        self._measure(self._file)
        return self

    @property
    def opened(self) -> bool:
        return self._opened

    def _open_once(self) -> None:  # the stream's own calls: size, read, fileno...
        if not self._opened:
            self.open()

    def _measure(self, f: IO[bytes]) -> None:
        # Size and validators come from fstat on the descriptor we will read,
        # never from a second stat(path) that could see another file.
        fileno = fileno_of(f)
        st = os.fstat(fileno) if fileno is not None else None
        self._stat = st
        self._fd = sendfile_fd(fileno, st)
        self._remaining, self._end, self._first = measure(
            f, st, offset=self.offset, want=self._want, chunk_size=self.chunk_size
        )

    # -- metadata ---------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Bytes this stream will send (its Content-Length), or None if unknown."""
        self._open_once()
        return self._end - self.offset if self._end is not None else self._want

    @property
    def stat(self) -> os.stat_result | None:
        """``os.fstat`` of the open descriptor (None for BytesIO and the like)."""
        self._open_once()
        return self._stat

    @property
    def file_size(self) -> int | None:
        """Size of the whole file (for ``Content-Range``), when known."""
        self._open_once()
        if self._stat is not None and stat.S_ISREG(self._stat.st_mode) and self._end is not None:
            return self._stat.st_size
        return self._end

    @property
    def is_regular(self) -> bool:
        self._open_once()
        return self._stat is not None and stat.S_ISREG(self._stat.st_mode)

    # -- iteration (the Python path) --------------------------------------
    def __next__(self) -> bytes:
        if self._closed or self.outcome is not None:
            raise StopIteration
        self._iterated = True
        try:
            self._open_once()
            chunk = self._read_chunk()
        except BaseException as exc:
            untouched = not self.bytes_sent and not self._pending
            self._next_failed(exc)
            self._release_file()
            if untouched and isinstance(exc, FileChanged):
                # No byte and no header has gone out yet, so the client can
                # still get a 500; an OSError would make gunicorn hang up
                # without any answer.
                raise HTTPError(str(exc)) from exc
            raise
        if not chunk:
            self._finish()
            self._release_file()  # at EOF, before the server calls close()
            raise StopIteration
        if self._remaining == 0:
            self._release_file()
        return self._emit(chunk)

    def _read_chunk(self) -> bytes:
        if self._first:
            chunk, self._first = self._first, b""
            self.via = "python"
            return self._count(chunk)
        return self._read(self.chunk_size)

    # -- the file-object face (for wsgi.file_wrapper) ---------------------
    def read(self, size: int = -1) -> bytes:
        """Read at most ``size`` bytes, never past the announced length.

        Raises :class:`~wsgipipe.FileChanged` if the file ends before
        the announced length: the server must abort, not send a short body.
        A server's file wrapper (wsgiref, gunicorn's Python fallback) reads
        through here, so a chunk counts as sent once the server asks again,
        as with iteration; an empty read at the announced end finishes.
        """
        chunk = self._read(size)
        if chunk:
            return self._emit(chunk)
        if self._remaining == 0:
            self._finish()
        return chunk

    def _read(self, size: int) -> bytes:
        self._open_once()
        if self._released:
            return b""
        want = self.chunk_size if size is None or size < 0 else size
        if self._remaining is not None:
            want = min(want, self._remaining)
        if want <= 0:
            return b""
        self.via = "python"
        chunk = os.read(self._fd, want) if self._fd is not None else self._read_file(want)
        if not chunk and self._remaining:
            raise FileChanged(self.name, self._announced(), self._pos - self.offset)
        return self._count(chunk)

    def _read_file(self, want: int) -> bytes:
        assert self._file is not None
        # read1 returns what a pipe has now instead of waiting for `want` bytes.
        read = getattr(self._file, "read1", self._file.read)
        return read(want) or b""

    def _count(self, chunk: bytes) -> bytes:
        self._pos += len(chunk)
        if self._remaining is not None:
            self._remaining -= len(chunk)
        return chunk

    def _announced(self) -> int:
        return (self._end - self.offset) if self._end is not None else self._pos - self.offset

    def fileno(self) -> int:
        """The descriptor, only for regular files (what sendfile needs)."""
        self._open_once()
        if self._fd is None or self._released:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def seekable(self) -> bool:
        return self._fd is not None and not self._released

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """Move the read position; ``socket.sendfile`` calls this when done.

        That call is how the zero-copy path learns how far the kernel got.
        """
        if whence != os.SEEK_SET or self._fd is None:
            raise io.UnsupportedOperation("FileStream only seeks absolutely within a regular file")
        if self._end is not None:
            pos = min(max(pos, self.offset), self._end)
        if not self._released:
            os.lseek(self._fd, pos, os.SEEK_SET)
        if self.via is None and pos > self._pos:
            self.via = "sendfile"  # the kernel moved bytes we never read
        # The position is the authority on what went out: it settles any
        # chunk read() handed over and not yet counted.
        self.bytes_sent = max(self.bytes_sent, pos - self.offset)
        self._pending = 0
        if self._end is not None:
            self._remaining = self._end - pos
        self._pos = pos
        return pos

    def for_server(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        """This stream as the server's ``wsgi.file_wrapper`` when that is zero-copy.

        Only regular files with a known, non-zero size qualify (gunicorn#1038:
        pipes and BytesIO break sendfile). The descriptor is positioned at
        ``offset``, which is where gunicorn starts sendfile (gunicorn PR#2687),
        and gunicorn sends exactly Content-Length bytes from there. Anything
        else gets the stream itself, read in Python.
        """
        wrapper = server_wrapper(environ)
        if wrapper is None or not self.zero_copy or self._closed:
            return self
        try:
            self._open_once()
        except OSError:
            return self  # let iteration raise it where error mapping can see it
        if self._fd is None or self._first or not self._remaining or self._pos != self.offset:
            return self
        os.lseek(self._fd, self.offset, os.SEEK_SET)
        result: Iterable[bytes] = wrapper(self, self.chunk_size)
        return result

    # -- release ----------------------------------------------------------
    def _release_file(self) -> None:
        if self._released:
            return
        self._released = True
        f, self._file = self._file, None
        self._fd = None
        if not self._opened and not isinstance(self._source, (str, os.PathLike)):
            f = self._source  # we own a file object even if we never read it
        if f is not None:
            f.close()

    def _release(self) -> None:
        # Decide the outcome before the descriptor goes: under sendfile the
        # only evidence is how far the kernel got (see seek()).
        short: FileChanged | None = None
        if self.outcome is None and self._opened and self._remaining == 0 and not self._pending:
            self._finish()
        elif self.outcome is None and self._server_saw_end():
            short = FileChanged(self.name, self._announced(), self.bytes_sent)
            self._fail(short)
        self._release_file()
        if short is not None:
            # RFC 9112 §6.3: a short body is an incomplete message. Raising
            # from close() makes gunicorn (sync, gthread) drop the connection
            # instead of reading the next pipelined request behind it.
            raise short

    def _server_saw_end(self) -> bool:
        # socket.sendfile stops without an error at end of file: the file
        # shrank while being sent (perhaps to grow back since). So a short
        # send with no exception on its way up through the server's finally
        # means the file changed; a send of nothing never calls seek(), so
        # there a changed fstat is the evidence.
        if self._iterated or self._fd is None or self._end is None or self._pos >= self._end:
            return False
        if sys.exc_info()[1] is not None:
            return False  # the send failed: the server drops the connection anyway
        return self.via == "sendfile" or self._changed(os.fstat(self._fd))

    def _changed(self, now: os.stat_result) -> bool:
        assert self._stat is not None and self._end is not None
        then = self._stat
        key = (now.st_mtime_ns, now.st_ctime_ns, now.st_size)
        return now.st_size < self._end or key != (then.st_mtime_ns, then.st_ctime_ns, then.st_size)

    def __repr__(self) -> str:
        return f"<FileStream {self.name!r} sent={self.bytes_sent} outcome={self.outcome}>"


def server_body(environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
    """What to hand the server for ``result``: a bare FileStream goes zero-copy."""
    return result.for_server(environ) if isinstance(result, FileStream) else result
