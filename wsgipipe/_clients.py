"""Simulated clients that end a response the way real ones do (public via wsgipipe.testing).

A test client such as WebTest reads the whole body and then calls
``close()``, so the endings that leak files in production (the client goes
away, stops reading, reads slowly) never happen in a test suite. These
helpers play the server's part of PEP 3333 against any WSGI app, in-process:

* :func:`download` and :func:`disconnect_after` drive the body directly:
  deterministic, no threads, no sockets;
* :func:`stalled_client`, :func:`slow_client` and :func:`hang_up_after`
  put a real loopback TCP connection between the body and the client,
  because what they test is waiting: the server blocks in ``sendall`` while
  the client does not read, and wsgipipe's own waits poll that connection.
  The connection is exposed as ``environ["gunicorn.socket"]``, as gunicorn
  does; with ``zero_copy=True`` they also offer ``wsgi.file_wrapper`` and
  send such bodies with ``socket.sendfile``, as gunicorn does.

Each accepts a bare WSGI app or a WebTest ``TestApp`` (its ``extra_environ``
is used, and with ``lint=True`` the app runs under WebTest's lint, which
also checks that the body is closed).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.test import EnvironBuilder

from ._body import Body, tracked
from ._errors import ClientGone

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

__all__ = [
    "Download",
    "disconnect_after",
    "download",
    "hang_up_after",
    "slow_client",
    "stalled_client",
]

Headers = list[tuple[str, str]]
Deliver = Callable[[bytes], None]  # writes one chunk to the client, raises if it is gone
SendFile = Callable[[Any, "int | None"], None]  # sends a file object, like socket.sendfile

#: Socket buffers for the simulated connection: small, so that a client that
#: stops reading blocks the server after a few hundred KiB, as on a real
#: network once the kernel buffers are full. The receive side stays above
#: twice the loopback MSS (64 KiB): below that, Linux holds back window
#: updates (silly-window avoidance) and every read stalls for 200 ms.
_SEND_BUFFER = 64 * 1024
_RECEIVE_BUFFER = 128 * 1024


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
    def body(self) -> Body | None:
        """The wsgipipe :class:`~wsgipipe.Body` the app returned, if any."""
        return tracked(self.returned) if self.returned is not None else None

    def header(self, name: str) -> str | None:
        """A response header, case-insensitively."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


# -- building the request ----------------------------------------------------
def _prepare(
    app: object,
    path: str,
    method: str,
    headers: Mapping[str, str] | None,
    environ: Mapping[str, Any] | None,
) -> tuple[WSGIApplication, WSGIEnvironment]:
    """The app to call and its environ; a WebTest TestApp is unwrapped."""
    overrides: dict[str, Any] = {}
    target: Any = app
    if hasattr(app, "extra_environ") and hasattr(app, "app"):  # webtest.TestApp
        overrides.update(app.extra_environ)
        target = app.app
        if getattr(app, "lint", False):
            from webtest.lint import middleware  # only when the caller uses WebTest

            target = middleware(target)
    overrides.update(environ or {})
    builder = EnvironBuilder(path=path, method=method, headers=list((headers or {}).items()))
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
def _serve(
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
    app: object,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, Any] | None = None,
    raise_errors: bool = True,
) -> Download:
    """Read the whole body, then ``close()``: the happy path, for comparison."""
    target, env = _prepare(app, path, method, headers, environ)
    got = bytearray()

    def take(chunk: bytes) -> None:
        got.extend(chunk)

    result = _serve(target, env, take, raise_errors)
    result.received = bytes(got)
    return result


def disconnect_after(
    app: object,
    nbytes: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, Any] | None = None,
    raise_errors: bool = True,
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
    target, env = _prepare(app, path, method, headers, environ)
    got = bytearray()

    def take(chunk: bytes) -> None:
        if len(got) + len(chunk) > nbytes:
            raise BrokenPipeError(errno.EPIPE, "simulated client disconnected")
        got.extend(chunk)

    result = _serve(target, env, take, raise_errors)
    result.received = bytes(got)
    return result


# -- over a real loopback connection -----------------------------------------------
def _connection() -> tuple[socket.socket, socket.socket]:
    """A connected (server end, client end) TCP pair on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    return server, client


class _Wire:
    """The server end of a simulated connection, written by the server thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done = threading.Event()

    def send(self, chunk: bytes) -> None:
        # Raises EPIPE/ECONNRESET for a client that left, EAGAIN when a send
        # timeout (wsgipipe's IdleTimeout) fires on a client that stalled.
        self.sock.sendall(chunk)

    def sendfile(self, filelike: Any, count: int | None) -> None:
        # Like gunicorn: from the descriptor's current offset, at most
        # Content-Length bytes; socket.sendfile seeks the file to where the
        # kernel got, which is how a wsgipipe stream counts its bytes.
        offset = os.lseek(filelike.fileno(), 0, os.SEEK_CUR)
        self.sock.sendfile(filelike, offset, count)


class _Client:
    """The client end: reads with a policy, remembers what it got and when it left."""

    def __init__(self, sock: socket.socket, wire: _Wire, deadline: float) -> None:
        self.sock = sock
        self.wire = wire
        self.deadline = deadline
        self.got = bytearray()
        #: When the client hung up or stopped reading (monotonic), if it did.
        self.gone_at: float | None = None

    def read(self, limit: int) -> bool:
        """Read up to ``limit`` bytes; False at end of body, error or deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(limit)
        except OSError:  # includes the timeout
            return False
        self.got += data
        return bool(data)

    def read_until(self, nbytes: int) -> None:
        while len(self.got) < nbytes and self.read(min(_RECEIVE_BUFFER, nbytes - len(self.got))):
            pass


Policy = Callable[[_Client], None]


def _over_socket(
    app: object,
    path: str,
    policy: Policy,
    *,
    method: str,
    headers: Mapping[str, str] | None,
    environ: Mapping[str, Any] | None,
    timeout: float,
    zero_copy: bool,
) -> Download:
    """Serve one response over a loopback connection to a client run by ``policy``."""
    target, env = _prepare(app, path, method, headers, environ)
    server, client = _connection()
    wire = _Wire(server)
    env["gunicorn.socket"] = server
    if zero_copy:
        env["wsgi.file_wrapper"] = FileWrapper
    ended: list[Download | BaseException] = []

    def run_server() -> None:
        try:
            ended.append(_serve(target, env, wire.send, False, wire.sendfile))
        except BaseException as exc:  # the app raised before returning a body
            ended.append(exc)
        finally:
            wire.done.set()
            _close_socket(server)

    thread = threading.Thread(target=run_server, name="wsgipipe-simulated-server", daemon=True)
    side = _Client(client, wire, time.monotonic() + timeout)
    with client:
        thread.start()
        policy(side)
        if side.gone_at is None and not wire.done.is_set():
            side.gone_at = time.monotonic()  # the deadline passed: hang up now
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the app did not return from close() within {timeout}s")
    return _settle(ended[0], side)


def _settle(ended: Download | BaseException, side: _Client) -> Download:
    if isinstance(ended, BaseException):
        raise ended
    ended.received = bytes(side.got)
    if side.gone_at is not None:
        ended.release_delay = max(0.0, ended.closed_at - side.gone_at)
    return ended


def _close_socket(sock: socket.socket) -> None:
    with suppress(OSError):  # already shut down by the app, or reset by the client
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def stalled_client(
    app: object,
    path: str = "/",
    *,
    read_first: int = 0,
    timeout: float = 5.0,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, Any] | None = None,
    zero_copy: bool = False,
) -> Download:
    """A client that reads ``read_first`` bytes, then keeps the connection open
    and reads nothing more.

    The server's ``sendall`` blocks once the socket buffers are full (a few
    hundred KiB), exactly as under gunicorn. If nothing in the app cuts the
    client off within ``timeout`` seconds of the stall, the client hangs up
    by itself. ``release_delay`` is the time from the stall to ``close()``:
    compare it with your idle timeout. A body small enough to fit in the
    buffers just finishes.
    """

    def stall(side: _Client) -> None:
        side.read_until(read_first)
        side.gone_at = time.monotonic()
        side.wire.done.wait(timeout)

    return _over_socket(
        app,
        path,
        stall,
        method=method,
        headers=headers,
        environ=environ,
        timeout=timeout,
        zero_copy=zero_copy,
    )


def slow_client(
    app: object,
    path: str = "/",
    *,
    read_size: int = 4096,
    pause: float = 0.05,
    timeout: float = 30.0,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, Any] | None = None,
    zero_copy: bool = False,
) -> Download:
    """A client that reads ``read_size`` bytes every ``pause`` seconds until the end.

    Slow is not gone: a correct app sends everything, however long it takes
    (up to ``timeout``, after which the client hangs up).
    """

    def crawl(side: _Client) -> None:
        while side.read(read_size):
            time.sleep(pause)

    return _over_socket(
        app,
        path,
        crawl,
        method=method,
        headers=headers,
        environ=environ,
        timeout=timeout,
        zero_copy=zero_copy,
    )


def hang_up_after(
    app: object,
    nbytes: int,
    path: str = "/",
    *,
    timeout: float = 5.0,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, Any] | None = None,
    zero_copy: bool = False,
) -> Download:
    """Like :func:`disconnect_after`, over a real connection: read ``nbytes``, then close it.

    Use it when the app waits between chunks (a delay, a throttle) and
    should notice the disconnect while it waits: ``release_delay`` is the
    time from the hang-up to ``close()``. How many bytes the server counts
    as sent depends on the kernel buffers, so assert on outcome and timing.
    """

    def hang_up(side: _Client) -> None:
        side.read_until(nbytes)
        side.sock.close()
        side.gone_at = time.monotonic()
        side.wire.done.wait(timeout)

    return _over_socket(
        app,
        path,
        hang_up,
        method=method,
        headers=headers,
        environ=environ,
        timeout=timeout,
        zero_copy=zero_copy,
    )
