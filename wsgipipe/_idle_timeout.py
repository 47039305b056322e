"""IdleTimeout and MinRate: cut off a client that stops reading or reads too slowly.

One watchdog thread per process looks at the client socket of every watched
response and feeds a :class:`~wsgipipe._pace.Progress` what the client has
acknowledged; the policy itself (and its exact reasons) is in
:mod:`wsgipipe._pace`.
"""

from __future__ import annotations

import _socket
import fcntl
import logging
import os
import socket
import struct
import termios
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING

from ._body import Body
from ._connection import Connection
from ._errors import ConfigurationError
from ._h2 import Stream, stream_of
from ._handoff import observe
from ._pace import DEFAULT_GRACE, DEFAULT_MIN_RATE, PACE_KEY, Pace, idle_reason
from ._record import current_transfer
from ._through import parse_rate
from ._watch_thread import WatchThread

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["IdleTimeout", "MinRate", "Watchdog", "min_rate_from", "watchdog"]

log = logging.getLogger("wsgipipe.idle_timeout")

#: Set once a pace middleware watches the response, so that nested ones
#: (a deployment's IdleTimeout around an app's own MinRate) watch it once.
_WATCHED = "wsgipipe.pace.watched"


def min_rate_from(value: str | float | None) -> float | None:
    """Bytes per second from ``"1k"``, ``"240"``, ``240.0``; None for ``0``, ``""`` or None.

    Units as :func:`~wsgipipe.Throttle` (curl's: k = 1024). Raises
    :class:`~wsgipipe.errors.ConfigurationError` for anything else.
    """
    if value is None or (isinstance(value, str) and value.strip() in ("", "0", "off")):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return None
    return float(parse_rate(value.strip() if isinstance(value, str) else value))


class _Paced:
    """Shared shape: call the app, then watch the client socket while the body is sent."""

    def __init__(self, app: WSGIApplication, pace: Pace) -> None:
        self.app = app
        self.pace = pace

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sock = Connection(environ).socket
        result = self.app(environ, start_response)
        # A Pace the app or an inner middleware stored replaces ours for
        # this response; storing ours tells an offloading server the pace.
        pace = environ.get(PACE_KEY)
        if not isinstance(pace, Pace):
            pace = environ[PACE_KEY] = self.pace
        if sock is None or not pace.active or environ.get(_WATCHED) or _queued(sock) is None:
            return result
        environ[_WATCHED] = True
        body, server = observe(environ, result)
        stream = stream_of(environ)
        if stream is not None and pace.idle_timeout is not None:
            # HTTP/2: a stream whose window stays shut queues nothing in the
            # socket; gunicorn resets that stream alone (wsgipipe._h2).
            stream.limit_stall(pace.idle_timeout, idle_reason(pace.idle_timeout))
        watch = watchdog().watch(sock, pace)
        if stream is not None:
            watch.h2, stream.paced = stream, pace.min_rate is not None
        body.on_close(lambda b: _closed(b, environ, watch))
        return server


def _closed(body: Body, environ: WSGIEnvironment, watch: _Watch) -> None:
    watchdog().remove(watch)
    if watch.cut is not None and body.outcome != "finished":
        body.abort(watch.cut)
        record = current_transfer(environ)
        if record is not None:
            record.reason = record.reason or watch.cut


class IdleTimeout(_Paced):
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

    With ``min_rate`` (bytes per second, or ``"1k"``), a client that takes
    the response slower than that floor after ``grace`` seconds is cut the
    same way, with ``reason='min rate'`` (see :class:`MinRate`).

    Progress is what the client acknowledges, not how often the server gets
    to write, so a slow reader that keeps moving is never cut, whatever the
    socket buffer sizes; and a response that is merely slow to produce
    (a :class:`~wsgipipe.Delay`, a :class:`~wsgipipe.Throttle`) has nothing
    queued and is never cut either. Both the Python path and gunicorn's
    sendfile path are covered. Under servers that expose no socket (waitress,
    the test client) or on systems without ``SIOCOUTQ`` the middleware does
    nothing; use the server's own setting there (waitress ``channel_timeout``).
    """

    def __init__(
        self,
        app: WSGIApplication,
        seconds: float,
        *,
        min_rate: str | float | None = None,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        if not seconds > 0:
            raise ConfigurationError(f"idle timeout must be a positive number, not {seconds!r}")
        super().__init__(app, Pace(seconds, min_rate_from(min_rate), grace))
        self.seconds = float(seconds)
        self.reason = idle_reason(self.seconds)


class MinRate(_Paced):
    """Middleware: cut off a client that takes the response slower than ``rate``.

    Kestrel's ``MinResponseDataRate``: by default 240 bytes per second after
    a 5 s grace period. Only time during which bytes wait in the socket for
    the client counts, and the bytes it acknowledges earn it time (a fast
    start gives slack); a client that falls behind ``grace + acked / rate``
    seconds of waiting is cut off as :class:`IdleTimeout` does, and recorded
    as ``aborted`` with ``reason='min rate'``. Needs ``TCP_INFO`` (TCP on
    Linux); on other sockets it does nothing.

    One response can have its own pace: a middleware or the app stores a
    :class:`~wsgipipe.Pace` in ``environ["wsgipipe.pace"]`` before returning.
    """

    def __init__(
        self,
        app: WSGIApplication,
        rate: str | float = DEFAULT_MIN_RATE,
        *,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        min_rate = min_rate_from(rate)
        if min_rate is None:
            raise ConfigurationError(f"a minimum rate must be at least 1 byte/s, not {rate!r}")
        super().__init__(app, Pace(None, min_rate, grace))
        self.rate = min_rate


class _Watch:
    """One watched response: its socket and the checker of its client's progress."""

    def __init__(self, sock: socket.socket, pace: Pace) -> None:
        self.sock = sock
        self.counts_bytes = _acked(sock) is not None
        if not self.counts_bytes:
            pace = replace(pace, min_rate=None)  # AF_UNIX: no byte count to rate
        self.interval = pace.check_interval()
        self.progress = pace.progress(time.monotonic())
        self.queued: int | None = None
        self.moves = 0
        self.cut: str | None = None
        self.h2: Stream | None = None
        #: Set when the response ended: a round that listed this watch before
        #: must not cut the connection, which may carry the next response now.
        self.removed = False

    def check(self, now: float) -> None:
        if self.removed or self.cut is not None:
            return  # the response ended, or already cut
        queued = _queued(self.sock)
        if queued is None:
            return  # closed under us
        acked = _acked(self.sock) if self.counts_bytes else None
        if acked is None:
            # No TCP_INFO (AF_UNIX): a send queue that changes is progress.
            self.moves += queued != self.queued
            self.queued, acked = queued, self.moves
        # Nothing queued means the server is not waiting on the client,
        # unless an HTTP/2 stream waits for its flow-control window.
        pending = queued > 0 or (self.h2 is not None and self.h2.writing)
        reason = self.progress.progress(acked, now, pending=pending)
        if reason is not None and not self.removed:
            self.cut = reason
            if self.h2 is not None:
                self.h2.cut = reason  # the worker thread resets this stream alone
            if self.h2 is None or queued:
                _shutdown(self.sock)  # a full socket: nothing else reaches the client


def _shutdown(sock: socket.socket) -> None:
    """Shut the connection down: the blocked send()/sendfile() fails with EPIPE.

    Every server treats EPIPE as a client that went away. Done on a plain
    duplicate of the descriptor: gevent's ``socket.shutdown`` would also wake
    the waiting greenlet with EBADF, which gunicorn logs as an error.
    """
    with suppress(OSError, ValueError):
        raw = _socket.socket(fileno=os.dup(sock.fileno()))
        try:
            raw.shutdown(socket.SHUT_RDWR)
        finally:
            raw.close()


class Watchdog(WatchThread[_Watch]):
    """A daemon thread checking every watched response a few times per limit.

    It runs while a response is watched and ends with the last one: a worker
    between downloads keeps no idle thread.
    """

    thread_name = "wsgipipe-idle-timeout"
    logger = log
    failure = "idle-timeout round failed"

    def watch(self, sock: socket.socket, pace: Pace) -> _Watch:
        watch = _Watch(sock, pace)
        self.add(watch)
        return watch

    def remove(self, watch: _Watch) -> None:
        watch.removed = True
        super().remove(watch)

    def round(self, watches: list[_Watch]) -> None:
        now = time.monotonic()
        for watch in watches:
            try:
                watch.check(now)
            except Exception:  # never let one socket stop the watchdog
                log.exception("idle-timeout check failed")
        # A quarter of the shortest limit: a stall is cut within
        # seconds * 1.25 at worst, at a cost of a few syscalls.
        time.sleep(min(w.interval for w in watches))


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
