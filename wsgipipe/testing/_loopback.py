"""Loopback clients: a real TCP connection between the app and a client that waits.

:func:`stalled_client`, :func:`slow_client` and :func:`hang_up_after` put a
loopback connection (127.0.0.1) between the body and the client, because
what they test is waiting: the server blocks in ``sendall`` while the client
does not read, and wsgipipe's own waits poll that connection. The
connection is exposed as ``environ["gunicorn.socket"]``, as gunicorn does;
with ``zero_copy=True`` they also offer ``wsgi.file_wrapper`` and send such
bodies with ``socket.sendfile``, as gunicorn does.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ._inprocess import Download, FileWrapper, prepare, serve_once

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._inprocess import Request

__all__ = ["hang_up_after", "slow_client", "stalled_client"]

#: Socket buffers for the simulated connection: small, so that a client that
#: stops reading blocks the server after a few hundred KiB, as on a real
#: network once the kernel buffers are full. The receive side stays above
#: twice the loopback MSS (64 KiB): below that, Linux holds back window
#: updates (silly-window avoidance) and every read stalls for 200 ms.
_SEND_BUFFER = 64 * 1024
_RECEIVE_BUFFER = 128 * 1024


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
    timeout: float,
    zero_copy: bool,
    request: Request,
) -> Download:
    """Serve one response over a loopback connection to a client run by ``policy``."""
    target, env = prepare(app, path, request)
    server, client = _connection()
    wire = _Wire(server)
    env["gunicorn.socket"] = server
    if zero_copy:
        env["wsgi.file_wrapper"] = FileWrapper
    ended: list[Download | BaseException] = []

    def run_server() -> None:
        try:
            ended.append(serve_once(target, env, wire.send, False, wire.sendfile))
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
    zero_copy: bool = False,
    **request: Unpack[Request],
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

    return _over_socket(app, path, stall, timeout, zero_copy, request)


def slow_client(
    app: object,
    path: str = "/",
    *,
    read_size: int = 4096,
    pause: float = 0.05,
    timeout: float = 30.0,
    zero_copy: bool = False,
    **request: Unpack[Request],
) -> Download:
    """A client that reads ``read_size`` bytes every ``pause`` seconds until the end.

    Slow is not gone: a correct app sends everything, however long it takes
    (up to ``timeout``, after which the client hangs up).
    """

    def crawl(side: _Client) -> None:
        while side.read(read_size):
            time.sleep(pause)

    return _over_socket(app, path, crawl, timeout, zero_copy, request)


def hang_up_after(
    app: object,
    nbytes: int,
    path: str = "/",
    *,
    timeout: float = 5.0,
    zero_copy: bool = False,
    **request: Unpack[Request],
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

    return _over_socket(app, path, hang_up, timeout, zero_copy, request)
