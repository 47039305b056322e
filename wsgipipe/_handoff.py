"""Observe a response and keep the server's zero-copy path: the one hand-off rule.

Every wsgipipe layer that looks at a response calls :func:`observe` with what
the app beneath it returned, and gets a :class:`Handoff`: the
:class:`~wsgipipe.Body` to watch (bytes sent, outcome, ``on_close``) and what
to return to the server. The rule, in one place:

* **Layers that do not need the bytes** (TransferLog, FileErrors,
  IdleTimeout, MinRate; Static and file_response when they hand over their
  own stream) watch a file body in place and give the server
  ``environ["wsgi.file_wrapper"](file)``, so that gunicorn sends it with
  ``sendfile(2)``. The file is a :class:`~wsgipipe.FileStream` or, when an app
  returned a file wrapper of its own over a regular file (Flask
  ``send_file``, Django ``FileResponse``, WhiteNoise, werkzeug's
  ``SharedDataMiddleware``), a :class:`FileView` of that file. Either way
  the bytes and the outcome come from the file-object calls the server
  makes: ``read`` on the Python path, and the ``seek`` with which
  ``socket.sendfile`` says where the kernel stopped. A HEAD response handed
  over this way reads nothing: gunicorn sends the headers only.
* **Layers that need the bytes** (Tee, Through, Delay, Throttle) call
  :func:`reads_body` before they call their app, so that no layer beneath
  them builds a server wrapper they would only undo, and pass ``transform``
  or ``source`` here: they look through a wrapper that arrives anyway to the
  wsgipipe stream inside, and read it in Python.
* A file goes to the server's wrapper only when
  :func:`~wsgipipe._body.server_wrapper` allows it: the server offers one, no
  layer above reads the body, and the server honours the file's position.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, NamedTuple

from ._body import READS_BODY, Body, Observed, Transform, server_wrapper
from ._errors import FileChanged
from ._h2 import guard
from ._record import Transfer, current_transfer
from ._stream import DEFAULT_CHUNK_SIZE, FileStream

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["FileView", "Handoff", "hand_over", "observe", "reads_body", "tracked"]

Source = Callable[[Iterable[bytes]], Iterable[bytes]]


class Handoff(NamedTuple):
    """What a layer watches, and what it returns to the server."""

    body: Body
    server: Iterable[bytes]


def reads_body(environ: WSGIEnvironment) -> None:
    """Say, before calling the app, that this layer reads the response body."""
    environ[READS_BODY] = True


def observe(
    environ: WSGIEnvironment,
    result: Iterable[bytes],
    *,
    transform: Transform | None = None,
    source: Source | None = None,
    prime: bool = False,
) -> Handoff:
    """The body to watch in ``result`` and what to hand the server (module docstring).

    ``transform`` (per chunk) or ``source`` (around the whole iterable) mean
    the caller reads the bytes: the body is then an :class:`Observed` read in
    Python. ``prime=True`` makes a first failure happen now without taking
    bytes from a file the server may send itself: a stream is opened, any
    other body has its first chunk pulled (:meth:`Observed.prime`). Under
    gunicorn's HTTP/2 the server's iterable checks the stream between chunks
    (:mod:`wsgipipe._h2`).
    """
    body, server = _observe(environ, result, transform, source, prime)
    return Handoff(body, guard(environ, body, server))


def _observe(
    environ: WSGIEnvironment,
    result: Iterable[bytes],
    transform: Transform | None,
    source: Source | None,
    prime: bool,
) -> Handoff:
    if transform is not None or source is not None:
        inner = _inner(result)
        if source is not None:
            inner = source(inner)
        body: Body = Observed(result, source=inner, transform=transform)
        return Handoff(body, body)
    found = tracked(result)
    if isinstance(found, (FileStream, FileView)) and found is not result:
        return Handoff(found, result)  # a wrapper built beneath us under this same rule
    found = found or _view(environ, result)
    if isinstance(found, (FileStream, FileView)):
        if prime and isinstance(found, FileStream) and not found.opened:
            found.open()  # its errors surface now; no byte is read
        return Handoff(found, found.for_server(environ))
    if isinstance(found, Observed) and prime:
        found.prime()  # in place: no second Python frame per chunk
    if found is not None and (isinstance(found, Observed) or not prime):
        return Handoff(found, result)
    body = Observed(result)
    if prime:
        body.prime()
    return Handoff(body, body)


def hand_over(environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
    """What the server gets for a producer's own body (Static, file_response)."""
    return result.for_server(environ) if isinstance(result, (FileStream, FileView)) else result


def tracked(iterable: Iterable[bytes]) -> Body | None:
    """The wsgipipe :class:`Body` behind ``iterable``: itself, or the file in a server wrapper."""
    if isinstance(iterable, Body):
        return iterable
    filelike = getattr(iterable, "filelike", None)  # gunicorn's and wsgiref's name (PEP 3333)
    return filelike if isinstance(filelike, Body) else None


def _inner(result: Iterable[bytes]) -> Iterable[bytes]:
    # A reader iterates the stream itself rather than the wrapper around it.
    found = tracked(result)
    return result if found is None else found


def _view(environ: WSGIEnvironment, result: Iterable[bytes]) -> FileView | None:
    """A :class:`FileView` if ``result`` is an app's file wrapper over a regular file."""
    file = getattr(result, "filelike", None)
    if file is None:
        return None
    try:
        fd = file.fileno()
        st = os.fstat(fd)
        start = file.tell()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # pipes and sockets stay with the app's own wrapper, read in Python
    blksize = getattr(result, "blksize", DEFAULT_CHUNK_SIZE)
    return FileView(result, file, fd, start, st.st_size, blksize, current_transfer(environ))


class FileView(Body):
    """The regular file inside an app's own file wrapper, watched through its file calls.

    The file wrapper's counterpart of :class:`~wsgipipe.FileStream`: an
    iterable for the Python path, and a file object (``read``, ``seek``,
    ``tell``, ``fileno``) for the server's wrapper. It never owns the file:
    ``close()`` closes the object the app returned, once, which releases the
    file the app's way (Django's ``response.close()`` fires
    ``request_finished``, django/django PR#11484).
    """

    def __init__(
        self,
        returned: Iterable[bytes],
        file: IO[bytes],
        fd: int,
        start: int,
        size: int,
        blksize: int,
        record: Transfer | None = None,
    ) -> None:
        super().__init__()
        self.returned = returned
        self.name = str(getattr(file, "name", "") or "")
        self._file = file
        self._fd = fd
        self._start = self._pos = start
        self._end = max(size, start)
        self._blksize = blksize if isinstance(blksize, int) and blksize > 0 else DEFAULT_CHUNK_SIZE
        self._record = record

    def for_server(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        """This file as the server's ``wsgi.file_wrapper`` when it may have one."""
        wrapper = server_wrapper(environ)
        if wrapper is None or self._closed or self._pos >= self._end:
            return self
        return wrapper(self, self._blksize)

    def __next__(self) -> bytes:
        if self._closed or self.outcome is not None:
            raise StopIteration
        chunk = self.read(self._blksize)
        if not chunk:
            raise StopIteration
        return chunk

    def read(self, size: int = -1) -> bytes:
        """Read up to the size the file had when the app returned it."""
        want = min(self._blksize if size is None or size < 0 else size, self._end - self._pos)
        if want <= 0 or self._closed:
            if not self._closed:
                self._finish()  # an empty read at the end: the server is done
            return b""
        self.via = "python"
        try:
            chunk = self._file.read(want)
            if not chunk:
                # RFC 9112 §6.3: shorter than announced must abort, not end.
                raise FileChanged(self.name, self._end - self._start, self._pos - self._start)
        except BaseException as exc:
            self._next_failed(exc)
            raise
        self._pos += len(chunk)
        return self._emit(chunk)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """Move the file; ``socket.sendfile`` seeks to where the kernel stopped."""
        new = self._file.seek(pos, whence)
        if whence == os.SEEK_SET:
            if self.via is None and new > self._pos:
                self.via = "sendfile"  # the kernel moved bytes we never read
            # The position is the authority on what went out: it settles any
            # chunk read() handed over and not yet counted.
            self.bytes_sent = max(self.bytes_sent, min(new, self._end) - self._start)
            self._pending = 0
        self._pos = new
        return new

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return not self._closed

    def fileno(self) -> int:
        if self._closed:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def _release(self) -> None:
        if self.outcome is None and not self._pending and self._pos >= self._expected_end():
            self._finish()
        close = getattr(self.returned, "close", None) or getattr(self._file, "close", None)
        if close is not None:
            close()

    def _expected_end(self) -> int:
        # A Content-Length shorter than the file is all the server sends.
        length = self._record.length if self._record is not None else None
        return self._end if length is None else min(self._end, self._start + length)

    def __repr__(self) -> str:
        return f"<FileView {self.name!r} sent={self.bytes_sent} outcome={self.outcome}>"
