"""What the server exposes about the client connection: has the client left?

PEP 3333 gives an app no way to learn that the client left (werkzeug#1649),
but real servers leak enough to do better:

* gunicorn puts the client socket in ``environ["gunicorn.socket"]`` (sync and
  gthread workers; it is blocking while the request runs; an ``SSLSocket``
  with ``certfile``, whose descriptor is the raw TCP socket);
* waitress offers ``environ["waitress.client_disconnected"]()`` when it runs
  with ``channel_request_lookahead`` > 0 (waitress#415).

:class:`Connection` turns that into two questions, :meth:`Connection.gone`
and :meth:`Connection.wait` (a sleep that ends early when the client
disconnects). The kernel's TCP state (``TCP_INFO``) says the client closed
or reset the connection even behind unread bytes: a pipelined request, TLS
records, HTTP/2 frames. Under gunicorn's HTTP/2 the frames are read through
gunicorn itself, so a reset of this one stream is seen too
(:mod:`wsgipipe._h2`). Where the server exposes neither, everything degrades to plain
behaviour: ``gone()`` is always False and ``wait()`` just sleeps. Cutting off
a client that stops reading is :mod:`wsgipipe._idle_timeout`'s job.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._errors import ClientGone
from ._h2 import stream_of

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["POLL_INTERVAL", "Connection"]

#: Longest a :meth:`Connection.wait` sleeps without looking at the client;
#: a disconnect that the socket does not report at once (waitress) is seen
#: within this bound.
POLL_INTERVAL = 0.05

_GONE_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNABORTED}


class Connection:
    """The client connection of one request, as far as the server shows it."""

    def __init__(self, environ: WSGIEnvironment) -> None:
        sock = environ.get("gunicorn.socket")
        self.socket: socket.socket | None = sock if isinstance(sock, socket.socket) else None
        self._h2 = stream_of(environ)
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
        if self._h2 is not None:
            self._h2.poll()
            if self._h2.over() is not None:
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
            if self._h2 is not None:
                self._h2.poll()  # under HTTP/2 unread frames are the normal state
            reason = self._h2.over() if self._h2 is not None else None
            state = "gone" if reason is not None else _peek(sock)
            if state == "gone":
                raise ClientGone(reason or "client disconnected")
            if state == "data":
                # A pipelined request keeps the socket readable; sleep so
                # that the poll does not spin until this response is done.
                time.sleep(seconds)
        if self._probe is not None and self._probe():
            raise ClientGone("client disconnected")


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
    if _tcp_gone(sock):
        return "gone"
    if isinstance(sock, ssl.SSLSocket):
        return "data"  # TLS records (a close_notify too): SSLSocket refuses MSG_PEEK
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return "quiet"
    except OSError as exc:
        return "gone" if exc.errno in _GONE_ERRNOS or exc.errno == errno.EBADF else "quiet"
    except ValueError:
        return "gone"  # the socket object was closed
    return "data" if data else "gone"


def _tcp_gone(sock: socket.socket) -> bool:
    """The peer sent FIN or RST, whatever is still unread (``tcpi_state``, Linux).

    An accepted socket is ESTABLISHED until then: CLOSE_WAIT after the
    peer's FIN (RFC 9293 §3.3.2), CLOSE after a reset. False where there is
    no ``TCP_INFO`` (AF_UNIX, other systems): the peek decides alone there.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, ValueError, AttributeError):
        return False
    return bool(info) and info[0] != _TCP_ESTABLISHED


#: ``TCP_ESTABLISHED`` in Linux's include/net/tcp_states.h.
_TCP_ESTABLISHED = 1
