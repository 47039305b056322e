"""The offload sender: one thread per worker process moving file bytes with sendfile(2).

A worker thread that has sent a response's headers hands the socket and the
file to :class:`Sender` as a :class:`Job` and goes back to serve the next
request. The sender keeps every job's socket in one selector and, whenever a
socket can take more, calls ``os.sendfile`` on it without blocking: the
kernel moves the bytes from the page cache to the socket, Python never sees
them, and a slow reader costs a registered descriptor instead of a thread.

The sender only moves bytes. When a job ends (all bytes sent, client gone,
cut by the worker) it hands the job to ``on_done`` and forgets it; closing
the body, logging and deciding about keep-alive happen in the worker's
threads, never here, so that a slow callback cannot stall every transfer.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from queue import Empty, SimpleQueue
from typing import Literal

__all__ = ["Job", "Sender"]

log = logging.getLogger("wsgipipe.gunicorn.offload")

#: Bytes asked of one sendfile call, and calls per socket per turn: a fast
#: reader cannot starve the others, a slow one costs one call per turn.
CHUNK = 4 * 1024 * 1024
CALLS_PER_TURN = 4

#: The client went away: an abort, not an error (RFC 9112 section 9.6).
_GONE = {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED}

Ending = Literal["finished", "aborted"]


class Job:
    """One offloaded transfer: send ``count`` bytes of ``fd`` from ``offset`` to ``sock``."""

    def __init__(self, sock: socket.socket, fd: int, offset: int, count: int) -> None:
        self.sock = sock
        self.fd = fd
        self.offset = offset
        self.count = count
        #: Bytes the kernel accepted on the socket (what went out, exactly).
        self.sent = 0
        self.ending: Ending | None = None
        #: Why an aborted job ended: "client gone", "worker shutdown", ...
        self.reason: str | None = None
        self.error: OSError | None = None

    @property
    def position(self) -> int:
        """Where the next byte of the file comes from."""
        return self.offset + self.sent

    def end(self, ending: Ending, reason: str | None = None, error: OSError | None = None) -> None:
        if self.ending is None:
            self.ending, self.reason, self.error = ending, reason, error

    def pump(self) -> bool:
        """Send what the socket takes now; True once the job has ended."""
        for _ in range(CALLS_PER_TURN):
            want = min(self.count - self.sent, CHUNK)
            try:
                n = os.sendfile(self.sock.fileno(), self.fd, self.position, want)
            except BlockingIOError:
                return False  # the socket is full: wait until it is writable
            except OSError as exc:
                gone = exc.errno in _GONE
                self.end("aborted", "client gone" if gone else f"sendfile: {exc}", exc)
                return True
            if n == 0:
                # The file ended before the announced length (it shrank): the
                # connection must close, never carry a short body.
                self.end("aborted", "file shrank")
                return True
            self.sent += n
            if self.sent >= self.count:
                self.end("finished")
                return True
            if n < want:
                return False  # the socket is full: skip the call that would say EAGAIN
        return False


class Sender:
    """The per-process thread driving every :class:`Job` with one selector.

    ``on_done(job)`` runs on the sender's thread once a job has ended; it must
    only hand the job on (to a thread pool), never do slow work itself.
    """

    def __init__(self, on_done: Callable[[Job], object]) -> None:
        self._on_done = on_done
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: SimpleQueue[tuple[str, Job | str]] = SimpleQueue()
        self._jobs: set[Job] = set()
        self._stopping = False
        self._closed = False  # the loop is over: nothing posted will be read
        self._lock = threading.Lock()
        #: Since when the loop has been busy with what select() returned,
        #: None while it waits (the worker's heartbeat checks it).
        self._busy_since: float | None = None
        #: What killed the loop, if something did.
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wsgipipe-offload", daemon=True)

    # -- any thread ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, job: Job) -> None:
        """Take over ``job``; its socket must already be non-blocking."""
        self._post("job", job)

    def cut_all(self, reason: str) -> None:
        """End every job in flight as aborted with ``reason`` (a stopping worker)."""
        self._post("cut", reason)

    def stop(self, reason: str, timeout: float = 2.0) -> None:
        """Cut every job, hand each to ``on_done``, and end the thread."""
        self._post("stop", reason)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def stuck_for(self, now: float) -> float:
        """Seconds the loop has been busy with one turn (0 while it waits in select).

        An idle sender waits up to a second in select(): that is not being
        stuck, whatever gunicorn's ``timeout``.
        """
        since = self._busy_since
        return 0.0 if since is None else max(now - since, 0.0)

    def _post(self, what: str, arg: Job | str) -> None:
        with self._lock:
            if not self._closed:
                self._inbox.put((what, arg))
                # A full pipe means a wake-up is pending anyway.
                with suppress(OSError):
                    os.write(self._wake_w, b"\0")
                return
        if isinstance(arg, Job):  # too late for the loop: end it here
            arg.end("aborted", "offload sender stopped")
            self._hand_on(arg)

    # -- the sender's thread --------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                self._turn()
        except BaseException as exc:
            self.failure = exc
            log.exception("offload sender failed; ending its transfers")
            self._end_all("offload sender failed")
        finally:
            self._stopping = True
            with self._lock:
                self._closed = True
            # A job read in the same turn as "stop" (behind it) is still here.
            self._end_all("offload sender stopped")
            self._drain_inbox("offload sender stopped")
            self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _turn(self) -> None:
        ready = self._selector.select(timeout=1.0)
        self._busy_since = time.monotonic()
        for key, _ in ready:
            if key.fd == self._wake_r:
                self._read_inbox()
            else:
                job: Job = key.data
                if job in self._jobs and job.pump():
                    self._finish(job)
        self._busy_since = None

    def _read_inbox(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for what, arg in self._inbox_items():
            if isinstance(arg, Job):
                self._jobs.add(arg)
                self._selector.register(arg.sock, selectors.EVENT_WRITE, arg)
            else:
                self._end_all(arg)
                self._stopping = self._stopping or what == "stop"

    def _end_all(self, reason: str) -> None:
        for job in list(self._jobs):
            job.end("aborted", reason)
            self._finish(job)

    def _drain_inbox(self, reason: str) -> None:
        # Jobs submitted after the loop ended still belong to someone.
        for _, arg in self._inbox_items():
            if isinstance(arg, Job):
                arg.end("aborted", reason)
                self._hand_on(arg)

    def _inbox_items(self) -> Iterator[tuple[str, Job | str]]:
        """What the inbox holds now, taken out one by one, without waiting."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except Empty:
                return

    def _finish(self, job: Job) -> None:
        self._jobs.discard(job)
        with suppress(KeyError, ValueError, OSError):
            self._selector.unregister(job.sock)
        self._hand_on(job)

    def _hand_on(self, job: Job) -> None:
        try:
            self._on_done(job)
        except Exception:  # one job's bookkeeping must not stop every transfer
            log.exception("offload: handing on a finished transfer failed")
