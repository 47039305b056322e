"""IdleTimeout: cut off a client that stops reading, and the watchdog that does it."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from typing import TYPE_CHECKING

from ._body import Body, Observed, tracked
from ._connection import Connection
from ._errors import ConfigurationError
from ._record import current_transfer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["IdleTimeout", "Watchdog", "watchdog"]

log = logging.getLogger("wsgipipe.idle_timeout")


class IdleTimeout:
    """Middleware: cut off a client that accepts no bytes for ``seconds``.

    The counterpart of Node's ``server.setTimeout``. While a response is
    being sent, one watchdog thread per process looks at the client socket
    gunicorn exposes: when bytes are waiting in the socket's send queue
    (``SIOCOUTQ``) and the client has acknowledged none of them
    (``TCP_INFO`` ``bytes_acked``) for ``seconds``, it shuts the socket down.
    The server's blocked ``send()`` or ``sendfile()`` then fails at once with
    EPIPE, the server closes the body (file released, worker thread free,
    the other transfers on the worker untouched) and the transfer is
    recorded as ``aborted`` with ``reason='idle timeout 30s'``.

    Progress is what the client acknowledges, not how often the server gets
    to write, so a slow reader that keeps moving is never cut, whatever the
    socket buffer sizes; and a response that is merely slow to produce
    (a :class:`~wsgipipe.Delay`, a :class:`~wsgipipe.Throttle`) has nothing
    queued and is never cut either. Both the Python path and gunicorn's
    sendfile path are covered. Under servers that expose no socket (waitress,
    the test client) or on systems without ``SIOCOUTQ`` the middleware does
    nothing; use the server's own setting there (waitress ``channel_timeout``).
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
        if sock is None or _queued(sock) is None:
            return result
        body = tracked(result)
        if body is None:
            body = result = Observed(result)
        watch = watchdog().watch(sock, self.seconds)
        body.on_close(lambda b: self._closed(b, environ, watch))
        return result

    def _closed(self, body: Body, environ: WSGIEnvironment, watch: _Watch) -> None:
        watchdog().unwatch(watch)
        if watch.cut and body.outcome != "finished":
            body.abort(self.reason)
            record = current_transfer(environ)
            if record is not None:
                record.reason = record.reason or self.reason


class _Watch:
    """One watched response: the socket and when its client last made progress."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.seconds = seconds
        self.mark: int | None = None
        self.since = time.monotonic()
        self.cut = False

    def check(self, now: float) -> None:
        queued = _queued(self.sock)
        if queued is None or self.cut:
            return  # closed under us, or already cut
        acked = _acked(self.sock)
        mark = queued if acked is None else acked  # AF_UNIX has no TCP_INFO
        if queued == 0 or mark != self.mark:
            # Nothing waiting for the client, or it took some: not idle.
            self.mark, self.since = mark, now
        elif now - self.since >= self.seconds:
            self.cut = True
            with suppress(OSError):
                # Wakes the blocked send()/sendfile() with EPIPE, which every
                # server treats as a client that went away.
                self.sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """A daemon thread checking every watched response a few times per timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, seconds: float) -> _Watch:
        watch = _Watch(sock, seconds)
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wsgipipe-idle-timeout", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watches:
                    self._cond.wait()
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                try:
                    watch.check(now)
                except Exception:  # never let one socket stop the watchdog
                    log.exception("idle-timeout check failed")
            # A quarter of the shortest timeout: a stall is cut within
            # seconds * 1.25 at worst, at a cost of a few syscalls.
            time.sleep(min(max(min(w.seconds for w in watches) / 4, 0.01), 0.25))


_watchdogs: dict[int, Watchdog] = {}


def watchdog() -> Watchdog:
    """This process's watchdog (a forked worker gets its own thread)."""
    pid = os.getpid()
    found = _watchdogs.get(pid)
    if found is None:
        found = _watchdogs.setdefault(pid, Watchdog())
    return found


def _queued(sock: socket.socket) -> int | None:
    """Bytes in the send queue not yet acknowledged (SIOCOUTQ), None if unknown."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return None
    return int(struct.unpack("i", raw)[0])


def _acked(sock: socket.socket) -> int | None:
    """``tcpi_bytes_acked`` (Linux >= 4.1), None for other sockets."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, ValueError, AttributeError):
        return None
    if len(raw) < _BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("Q", raw, _BYTES_ACKED)[0])


#: Offset of ``tcpi_bytes_acked`` in Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h).
_BYTES_ACKED = 120
_TCP_INFO_SIZE = 232
