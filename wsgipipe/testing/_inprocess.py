"""In-process clients: the server's part of PEP 3333, played against any WSGI app.

A test client such as WebTest reads the whole body and then calls
``close()``, so the endings that leak files in production (the client goes
away, stops reading, reads slowly) never happen in a test suite.
:func:`download` and :func:`disconnect_after` drive the body directly:
deterministic, no threads, no sockets. The clients that need a real
connection are in :mod:`wsgipipe.testing._loopback`; both share the server
loop here (:func:`serve_once`).

Each accepts a bare WSGI app or a WebTest ``TestApp`` (its ``extra_environ``
is used, and with ``lint=True`` the app runs under WebTest's lint, which
also checks that the body is closed).
"""

from __future__ import annotations

import errno
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from werkzeug.test import EnvironBuilder

from .._body import Body
from .._errors import ClientGone
from .._handoff import tracked

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

__all__ = [
    "Download",
    "FileWrapper",
    "Request",
    "disconnect_after",
    "download",
    "prepare",
    "serve_once",
]

Headers = list[tuple[str, str]]
Deliver = Callable[[bytes], None]  # writes one chunk to the client, raises if it is gone
SendFile = Callable[[Any, "int | None"], None]  # sends a file object, like socket.sendfile


class Request(TypedDict, total=False):
    """What every client takes besides the app and the path."""

    #: The request method (``GET`` by default).
    method: str
    #: Request headers, as a dict.
    headers: Mapping[str, str] | None
    #: Extra environ keys; they override the built environ.
    environ: Mapping[str, Any] | None


@dataclass
class Download:
    """One simulated response: what the client got and how the server ended it."""

    status: str = ""
    headers: Headers = field(default_factory=list)
    #: The body bytes the client read.
    received: bytes = b""
    #: The object the app returned (already closed, as a server would).
    returned: Iterable[bytes] | None = None
    #: The exception the app raised while iterating or closing its body.
    error: BaseException | None = None
    #: How the client's departure showed: the ``OSError`` of a write to a
    #: client that left or stalled, or the app's :class:`~wsgipipe.ClientGone`.
    write_error: BaseException | None = None
    #: Seconds from the request until the server called ``close()``.
    duration: float = 0.0
    #: Seconds from the client hanging up (or stopping reading) until
    #: ``close()``; None if the client never did.
    release_delay: float | None = None
    #: ``time.monotonic()`` when ``close()`` returned.
    closed_at: float = 0.0
    #: True once the first body byte was handed to the client (headers are out).
    headers_sent: bool = False

    @property
    def wsgipipe_body(self) -> Body | None:
        """The wsgipipe :class:`~wsgipipe.Body` behind what the app returned, if any."""
        return tracked(self.returned) if self.returned is not None else None

    @property
    def body(self) -> Body | None:
        """Deprecated alias of :attr:`wsgipipe_body` (``received`` holds the bytes)."""
        warnings.warn(
            "Download.body is now Download.wsgipipe_body; the bytes are Download.received",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.wsgipipe_body

    def header(self, name: str) -> str | None:
        """A response header, case-insensitively."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


# -- building the request ----------------------------------------------------
def prepare(app: object, path: str, request: Request) -> tuple[WSGIApplication, WSGIEnvironment]:
    """The app to call and its environ; a WebTest TestApp is unwrapped."""
    overrides: dict[str, Any] = {}
    target: Any = app
    if hasattr(app, "extra_environ") and hasattr(app, "app"):  # webtest.TestApp
        overrides.update(app.extra_environ)
        target = app.app
        if getattr(app, "lint", False):
            from webtest.lint import middleware  # only when the caller uses WebTest

            target = middleware(target)
    overrides.update(request.get("environ") or {})
    headers = list((request.get("headers") or {}).items())
    builder = EnvironBuilder(path=path, method=request.get("method", "GET"), headers=headers)
    try:
        built = builder.get_environ()
    finally:
        builder.close()
    built.update(overrides)
    return target, built


def _start(result: Download) -> Callable[..., Callable[[bytes], object]]:
    def start_response(
        status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if exc_info is not None and exc_info[1] is not None and result.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late
        result.status, result.headers = status, list(headers)
        return _no_write

    return start_response


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the simulated server does not support write()")


class FileWrapper:
    """A ``wsgi.file_wrapper`` like gunicorn's, offered by the socket clients.

    Bodies returned as one of these go out through ``socket.sendfile`` when
    the file has a real descriptor, as under gunicorn; iterating it reads
    ``block_size`` bytes at a time.
    """

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.filelike.read(self.block_size):
            yield chunk

    def zero_copy(self) -> bool:
        try:
            self.filelike.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# -- the in-process server loop ------------------------------------------------
def serve_once(
    app: WSGIApplication,
    environ: WSGIEnvironment,
    deliver: Deliver,
    raise_errors: bool,
    sendfile: SendFile | None = None,
) -> Download:
    """Call ``app``, hand each chunk to ``deliver`` until it raises, then ``close()``.

    As in gunicorn, ``close()`` runs while the error that ended the loop is
    still being handled, so a body's close callbacks can see it in
    ``sys.exc_info()`` (that is how an idle timeout knows it fired).
    """
    result = Download()
    started = time.monotonic()
    returned = app(environ, _start(result))
    result.returned = getattr(returned, "original_iterator", returned)  # under lint
    writing = [False]  # set while a write to the client is under way
    try:
        _push(returned, deliver, sendfile, result, writing)
    except Exception as exc:
        if writing[0] or isinstance(exc, ClientGone):  # the app saw the client leave
            result.write_error = exc
        else:
            result.error = exc
        _close(returned, result)
    else:
        _close(returned, result)
    result.duration = result.closed_at - started
    if raise_errors and result.error is not None:
        raise result.error
    return result


def _push(
    returned: Iterable[bytes],
    deliver: Deliver,
    sendfile: SendFile | None,
    result: Download,
    writing: list[bool],
) -> None:
    if sendfile is not None and isinstance(returned, FileWrapper) and returned.zero_copy():
        # gunicorn's rule: its own wrapper around a real descriptor goes out
        # with sendfile(2), Content-Length bytes from the current offset.
        writing[0] = result.headers_sent = True
        sendfile(returned.filelike, _content_length(result.headers))
        writing[0] = False
        return
    for chunk in returned:
        if chunk:
            writing[0] = result.headers_sent = True
            deliver(chunk)
            writing[0] = False


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return None


def _close(returned: Iterable[bytes], result: Download) -> None:
    close = getattr(returned, "close", None)
    try:
        if close is not None:
            close()
    except Exception as exc:
        result.error = result.error or exc
    result.closed_at = time.monotonic()


def download(
    app: object, path: str = "/", *, raise_errors: bool = True, **request: Unpack[Request]
) -> Download:
    """Read the whole body, then ``close()``: the happy path, for comparison."""
    target, env = prepare(app, path, request)
    got = bytearray()

    def take(chunk: bytes) -> None:
        got.extend(chunk)

    result = serve_once(target, env, take, raise_errors)
    result.received = bytes(got)
    return result


def disconnect_after(
    app: object,
    nbytes: int,
    path: str = "/",
    *,
    raise_errors: bool = True,
    **request: Unpack[Request],
) -> Download:
    """A client that hangs up once it has ``nbytes`` bytes.

    The server writes whole chunks while they fit in ``nbytes``; the write
    of the first chunk that does not fit is the one that fails, so the
    server stops asking for more and calls ``close()``, as gunicorn does on
    ``EPIPE``. With 64 KiB chunks, ``disconnect_after(app, 65536)`` leaves a
    wsgipipe body ``aborted`` with ``bytes_sent == 65536``. A body no longer
    than ``nbytes`` simply finishes.
    """
    if nbytes < 0:
        raise ValueError("nbytes must not be negative")
    target, env = prepare(app, path, request)
    got = bytearray()

    def take(chunk: bytes) -> None:
        if len(got) + len(chunk) > nbytes:
            raise BrokenPipeError(errno.EPIPE, "simulated client disconnected")
        got.extend(chunk)

    result = serve_once(target, env, take, raise_errors)
    result.received = bytes(got)
    return result
