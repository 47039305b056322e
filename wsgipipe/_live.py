"""Live transfers: what every worker is sending right now, and how recent ones ended.

Cost on the hot path: a dict insert when a body starts and a dict pop plus a
deque append when it closes; nothing per chunk. A sampler thread per process
(started on first use, so each forked worker has its own) reads the bodies'
``bytes_sent`` four times a second, works out rate and stall, and publishes
the process's state to its slot file (:mod:`wsgipipe._live_slots`). Whoever
serves the page reads every slot file, so the page covers all workers and a
restarted worker simply appears under its new pid.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._idle_timeout import _acked
from ._live_slots import SLOT_SIZE, SlotWriter, default_directory, read_all

if TYPE_CHECKING:
    import socket

    from _typeshed.wsgi import WSGIEnvironment

    from ._body import Body
    from ._record import Transfer

__all__ = ["Flight", "Live"]

log = logging.getLogger("wsgipipe.live")

#: Seconds between two samples of the transfers in flight.
TICK = 0.25

_starting = threading.Lock()  # taken once per process, never per request after that

#: Bumped in every forked child: "is this a new process?" without a getpid() per request.
GENERATION = [0]
os.register_at_fork(after_in_child=lambda: GENERATION.__setitem__(0, GENERATION[0] + 1))


class Flight:
    """One transfer in flight, as the sampler sees it (slots: made once per request)."""

    __slots__ = (
        "acked_at_start",
        "body",
        "client",
        "moved_at",
        "rate",
        "record",
        "seen",
        "sock",
    )

    def __init__(
        self, record: Transfer, body: Body, client: str, sock: socket.socket | None
    ) -> None:
        self.record = record
        self.body = body
        self.client = client
        self.sock = sock
        self.acked_at_start = _acked(sock) if sock is not None else None
        self.seen = 0
        self.moved_at = record.started
        self.rate = 0.0

    def sample(self, now: float) -> int:
        """Bytes sent so far; updates the rate and when the transfer last moved."""
        sent = self.sent()
        if sent != self.seen:
            self.rate = (sent - self.seen) / max(now - self.moved_at, 1e-3)
            self.seen, self.moved_at = sent, now
        elif now - self.moved_at >= 1.0:
            self.rate = 0.0
        return sent

    def stalled(self, now: float, after: float) -> bool:
        return now - self.moved_at >= after

    def sent(self) -> int:
        sent = self.body.bytes_sent
        if self.sock is not None and self.acked_at_start is not None:
            # Under sendfile wsgipipe learns the count only at the end; what
            # the client acknowledged on this connection is the live figure
            # (it includes the response headers, hence the cap).
            acked = _acked(self.sock)
            if acked is not None:
                sent = max(sent, acked - self.acked_at_start)
        length = self.record.length
        return min(sent, length) if length is not None else sent


class Live:
    """The live-transfers state of one server (observer + reader).

    ``directory`` holds one slot file per worker; all processes of a server
    must agree on it (by default a directory keyed by the parent process,
    gunicorn's arbiter, under ``/dev/shm``). ``endings`` recent endings are
    kept per worker; a transfer with no progress for ``stalled_after``
    seconds is flagged as stalled.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        endings: int = 50,
        stalled_after: float = 5.0,
        forget_after: float = 300.0,
    ) -> None:
        self._directory = Path(directory) if directory is not None else None
        self.endings_kept = endings
        self.stalled_after = stalled_after
        self.forget_after = forget_after
        self._pid = 0
        self._generation = -1
        self._flights: dict[int, Flight] = {}
        self._endings: deque[tuple[Transfer, str, float]] = deque(maxlen=endings)
        self._writer: SlotWriter | None = None

    @property
    def directory(self) -> Path:
        # Decided at first use, in the worker, whose parent is the arbiter.
        if self._directory is None:
            self._directory = default_directory()
        return self._directory

    # -- the observer (runs in request threads: no locks, no I/O) -------------
    def started(self, environ: WSGIEnvironment) -> None:
        if self._generation != GENERATION[0]:  # first request in this (forked) process
            with _starting:
                if self._generation != GENERATION[0]:
                    self._start_sampler()

    def streaming(self, environ: WSGIEnvironment, record: Transfer, body: Body) -> None:
        client = environ.get("REMOTE_ADDR", "")
        self._flights[id(record)] = Flight(record, body, client, environ.get("gunicorn.socket"))

    def ended(self, environ: WSGIEnvironment, record: Transfer) -> None:
        flight = self._flights.pop(id(record), None)
        client = flight.client if flight is not None else environ.get("REMOTE_ADDR", "")
        self._endings.append((record, client, time.time()))  # the sampler formats it

    # -- the sampler thread -------------------------------------------------------
    def _start_sampler(self) -> None:
        self._pid = os.getpid()
        self._flights = {}
        self._endings = deque(maxlen=self.endings_kept)
        self._generation = GENERATION[0]  # last: no flight goes to the old table
        try:
            self._writer = SlotWriter(self.directory, self._pid)
        except OSError:
            # The page goes blind for this worker; its downloads must not fail.
            log.exception("live transfers: cannot write a slot file in %s", self.directory)
            return
        thread = threading.Thread(target=self._run, name="wsgipipe-live", daemon=True)
        thread.start()

    def _run(self) -> None:
        pid = self._pid
        while pid == os.getpid():
            with suppress(Exception):  # a bad sample must not end the page
                self.publish()
            time.sleep(TICK)

    def publish(self) -> None:
        """Sample the transfers in flight and write this process's slot."""
        writer = self._writer
        if writer is None:
            return
        now = time.monotonic()
        flights = [self._sample(f, now) for f in list(self._flights.values())]
        endings = [_ending(*e, self._pid) for e in list(self._endings)]
        data = _encode(self._pid, flights, endings)
        while len(data) > SLOT_SIZE // 2 and (flights or endings):
            # Far more transfers than a page can show: keep the newest.
            endings = endings[len(endings) // 2 + 1 :]
            flights = flights[: len(flights) // 2]
            data = _encode(self._pid, flights, endings)
        writer.write(data)

    def _sample(self, flight: Flight, now: float) -> dict[str, Any]:
        sent = flight.sample(now)
        elapsed = now - flight.record.started
        record = flight.record
        return {
            **_named(record, flight.client),
            "bytes": sent,
            "length": record.length,
            "rate": round(flight.rate),
            "age": round(elapsed, 2),
            "stalled": flight.stalled(now, self.stalled_after),
            "idle": round(now - flight.moved_at, 2),
            "started": round(time.time() - elapsed, 3),
            "pid": self._pid,
        }

    # -- the reader -----------------------------------------------------------------
    def snapshot(self, *, endings: int | None = None) -> dict[str, Any]:
        """Transfers in flight on every live worker, and the newest endings of all."""
        slots = read_all(self.directory, forget_after=self.forget_after)
        flights = [f for s in slots if s["alive"] for f in s.get("flights", [])]
        flights.sort(key=lambda f: f.get("started", 0))
        ended = [e for s in slots for e in s.get("endings", [])]
        ended.sort(key=lambda e: e.get("ended", 0), reverse=True)
        return {
            "now": round(time.time(), 3),
            "workers": sorted(s["pid"] for s in slots if s["alive"]),
            "in_flight": flights,
            "endings": ended[: endings or self.endings_kept],
        }


def _encode(pid: int, flights: list[dict[str, Any]], endings: list[dict[str, Any]]) -> bytes:
    payload = {"pid": pid, "beat": time.time(), "flights": flights, "endings": endings}
    return json.dumps(payload, separators=(",", ":")).encode()


def _ending(record: Transfer, client: str, ended: float, pid: int) -> dict[str, Any]:
    return {
        **_named(record, client),
        "outcome": record.outcome,
        "bytes": record.bytes_sent,
        "length": record.length,
        "duration": round(record.duration, 3),
        "reason": record.reason or "",
        "via": record.notes.get("via", ""),
        "ended": round(ended, 3),
        "pid": pid,
    }


def _named(record: Transfer, client: str) -> dict[str, Any]:
    """The fields every row of the page starts with: the request, its client, its status."""
    return {"method": record.method, "path": record.path, "client": client, "status": record.status}
