"""What the server exposes about the client connection: disconnects and stalls.

PEP 3333 gives an app no way to learn that the client left (werkzeug#1649),
but real servers leak enough to do better:

* gunicorn puts the client socket in ``environ["gunicorn.socket"]`` (sync and
  gthread workers; it is blocking while the request runs);
* waitress offers ``environ["waitress.client_disconnected"]()`` when it runs
  with ``channel_request_lookahead`` > 0 (waitress#415).

:class:`Connection` turns that into two questions, :meth:`Connection.gone`
and :meth:`Connection.wait` (a sleep that ends early when the client
disconnects), and :class:`IdleTimeout` cuts off a client that stops reading.
Where the server exposes neither, everything degrades to plain behaviour:
``gone()`` is always False, ``wait()`` just sleeps and no idle timeout is set.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .body import Body, Observed, tracked
from .errors import ClientGone, ConfigurationError
from .record import current_transfer
from .stream import FileStream

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["POLL_INTERVAL", "Connection", "IdleTimeout"]

#: Longest a :meth:`Connection.wait` sleeps without looking at the client;
#: a disconnect that the socket does not report at once (waitress) is seen
#: within this bound.
POLL_INTERVAL = 0.05

_TIMEOUT_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ETIMEDOUT}
_GONE_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED}


class Connection:
    """The client connection of one request, as far as the server shows it."""

    def __init__(self, environ: WSGIEnvironment) -> None:
        sock = environ.get("gunicorn.socket")
        self.socket: socket.socket | None = sock if _peekable(sock) else None
        probe = environ.get("waitress.client_disconnected")
        self._probe: Callable[[], bool] | None = probe if callable(probe) else None

    @property
    def observable(self) -> bool:
        """True if this server lets wsgipipe see a disconnect at all."""
        return self.socket is not None or self._probe is not None

    def gone(self) -> bool:
        """True once the client has closed or reset the connection.

        Never blocks. With a socket: readable plus a one-byte ``MSG_PEEK``
        that returns ``b""`` (FIN) or fails with ECONNRESET means gone;
        readable with data is a pipelined request, not a disconnect. A client
        that half-closes its side (``shutdown(SHUT_WR)``) looks gone too; HTTP
        clients do not do that while they still want the response.
        """
        if self._probe is not None and self._probe():
            return True
        if self.socket is None:
            return False
        return _readable(self.socket, 0) and _peek(self.socket) == "gone"

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise :class:`ClientGone` as soon as the client leaves.

        The socket is polled for readability, so a FIN or RST wakes the wait
        at once instead of at the next write (the "slow through" problem);
        a server without a socket is asked every :data:`POLL_INTERVAL`.
        """
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wait_slice(min(left, POLL_INTERVAL))

    def _wait_slice(self, seconds: float) -> None:
        sock = self.socket
        if sock is None:
            if self.gone():
                raise ClientGone("client disconnected")
            time.sleep(seconds)
            return
        if _readable(sock, seconds):
            state = _peek(sock)
            if state == "gone":
                raise ClientGone("client disconnected")
            if state == "data":
                # A pipelined request keeps the socket readable; sleep so
                # that the poll does not spin until this response is done.
                time.sleep(seconds)
        if self._probe is not None and self._probe():
            raise ClientGone("client disconnected")


def _peekable(sock: object) -> bool:
    # An SSL socket cannot MSG_PEEK the raw stream; treat it as unobservable.
    return isinstance(sock, socket.socket) and type(sock).__name__ != "SSLSocket"


def _readable(sock: socket.socket, timeout: float) -> bool:
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        events = poller.poll(timeout * 1000)
    except (OSError, ValueError):
        return True  # closed under us: let the peek decide
    if not events:
        return False
    return bool(events)


def _peek(sock: socket.socket) -> str:
    """``"gone"`` (FIN or reset), ``"data"`` (pipelined bytes) or ``"quiet"``."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return "quiet"
    except OSError as exc:
        return "gone" if exc.errno in _GONE_ERRNOS or exc.errno == errno.EBADF else "quiet"
    except ValueError:
        return "gone"  # the socket object was closed
    return "data" if data else "gone"


class IdleTimeout:
    """Middleware: cut off a client that accepts no bytes for ``seconds``.

    The counterpart of Node's ``server.setTimeout``. It sets, for the time of
    the response, a send timeout on the client socket gunicorn exposes:

    * ``SO_SNDTIMEO`` for bodies written from Python: every blocked
      ``send()`` fails after ``seconds`` without progress, so a slow reader
      that keeps moving is never cut, only a stalled one;
    * the socket's Python timeout for a body that may go out through
      ``wsgi.file_wrapper`` (sendfile): ``socket.sendfile`` waits at most
      ``seconds`` for the socket to become writable each round.

    When the write fails, the server closes the body (file released, worker
    thread free, the other transfers on the worker untouched) and the
    transfer is recorded as ``aborted`` with ``reason='idle timeout 30s'``.
    Under servers that expose no socket (waitress, the test client) the
    middleware does nothing; use the server's own setting there (waitress
    ``channel_timeout``).
    """

    def __init__(self, app: WSGIApplication, seconds: float) -> None:
        if not seconds > 0:
            raise ConfigurationError(f"idle timeout must be a positive number, not {seconds!r}")
        self.app = app
        self.seconds = float(seconds)
        self.reason = f"idle timeout {self.seconds:g}s"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sock = Connection(environ).socket
        result = self.app(environ, start_response)
        if sock is None:
            return result
        body = tracked(result)
        if body is None:
            body = result = Observed(result)
        # A bare FileStream (or a server file wrapper around one) may go out
        # through sendfile, which only honours the Python-level timeout.
        zero_copy = body is not result or isinstance(result, FileStream)
        restore = _arm(sock, self.seconds, python_timeout=zero_copy)
        body.on_close(lambda b: self._closed(b, environ, restore))
        return result

    def _closed(self, body: Body, environ: WSGIEnvironment, restore: Callable[[], None]) -> None:
        # gunicorn closes the body from a ``finally`` while the write error
        # is still propagating, so the error that ended the transfer is in
        # sys.exc_info() here.
        restore()
        if body.outcome != "finished" and _timed_out(sys.exc_info()[1]):
            body.abort(self.reason)
            record = current_transfer(environ)
            if record is not None:
                record.reason = record.reason or self.reason


def _arm(sock: socket.socket, seconds: float, *, python_timeout: bool) -> Callable[[], None]:
    before = sock.gettimeout()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))
        if python_timeout:
            sock.settimeout(seconds)
    except OSError:
        return _nothing  # the socket is already gone; the write will say so

    def restore() -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(0))
            sock.settimeout(before)
        except OSError:
            pass  # closed: nothing left to restore

    return restore


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _timed_out(exc: BaseException | None) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TIMEOUT_ERRNOS


def _nothing() -> None:
    return None
