"""Watch a client while the worker thread is blocked on something else.

A body that waits on an upstream socket cannot poll the client itself: the
read happens inside urllib3 and http.client, behind a buffer. So one thread
per process polls the client sockets of every such body, every
:data:`~wsgipipe._connection.POLL_INTERVAL` at most, and when a client
leaves it shuts the upstream socket down. The blocked read then returns at
once and the body raises :class:`~wsgipipe.ClientGone`.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from contextlib import suppress
from typing import TYPE_CHECKING

from ._connection import POLL_INTERVAL, Connection
from ._watch_thread import WatchThread

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["Watch", "watch_client"]

log = logging.getLogger("wsgipipe.client_watch")


class Watch:
    """One body's client, and the upstream socket to shut down when it leaves."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.cut = False
        self.pipelined = False  # the client sent more: poll() would always fire
        self._upstream: socket.socket | None = None
        self._active = True
        self._lock = threading.Lock()

    def attach(self, upstream: socket.socket | None) -> None:
        """The socket the worker thread is about to block on."""
        with self._lock:
            self._upstream = upstream
            if self.cut:
                _shutdown(upstream)

    def check(self) -> None:
        """Called by the watcher thread: cut if the client is gone."""
        if not self.connection.gone():
            if self.connection.socket is not None:
                self.pipelined = True
            return
        with self._lock:
            if self._active and not self.cut:
                self.cut = True
                _shutdown(self._upstream)

    def stop(self) -> None:
        """No cut after this returns (the upstream socket may go back to a pool)."""
        with self._lock:
            self._active = False
        _watcher().remove(self)


def watch_client(environ: WSGIEnvironment) -> Watch | None:
    """A running watch on this request's client, or None if the server hides it."""
    connection = Connection(environ)
    if not connection.observable:
        return None
    watch = Watch(connection)
    _watcher().add(watch)
    return watch


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watcher(WatchThread[Watch]):
    """The thread polling every watched client socket.

    It runs only while there is something to watch: the last ``remove()``
    lets it end, and the next ``add()`` starts a new one, so a process that
    proxies now and then keeps no idle thread.
    """

    thread_name = "wsgipipe-client-watch"
    logger = log
    failure = "client watch failed"  # never let one socket stop the watcher

    def round(self, watches: list[Watch]) -> None:
        poller = select.poll()
        by_fd: dict[int, Watch] = {}
        for watch in watches:
            sock = watch.connection.socket
            if sock is None or watch.pipelined or watch.cut:
                continue
            with suppress(OSError, ValueError):
                by_fd[sock.fileno()] = watch
                poller.register(sock, select.POLLIN | select.POLLPRI)
        events = poller.poll(POLL_INTERVAL * 1000)
        # Readable sockets are looked at now; the others only when they have
        # no socket to poll (waitress's probe) or keep a pipelined request.
        due = {by_fd[fd] for fd, _ in events if fd in by_fd}
        due.update(w for w in watches if w.connection.socket is None or w.pipelined)
        for watch in due:
            if not watch.cut:
                watch.check()


_WATCHER = _Watcher()
# A forked worker starts with no thread and nothing to watch, whatever its
# parent was doing (gunicorn forks workers from a process that may proxy).
os.register_at_fork(after_in_child=_WATCHER.forget)


def _watcher() -> _Watcher:
    return _WATCHER
