"""Prometheus metrics for every transfer (``pip install 'wsgipipe[metrics]'``).

The figures come from the same :class:`~wsgipipe.Transfer` records that
:class:`~wsgipipe.TransferLog` writes at ``close()``::

    from wsgipipe.prometheus import TransferMetrics

    metrics = TransferMetrics()
    app = metrics.wrap(my_app)           # counts every transfer of my_app
    exposition = metrics.exposition_app()  # serve it on a path of your choice

Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before
it starts and call :func:`mark_process_dead` from ``child_exit`` (see
``gunicorn.conf.py``): the exposition then sums every worker, dead ones
included for the counters, live ones only for the in-flight gauge.

Metrics (docs/operations.md has the PromQL):

* ``wsgipipe_transfers_total{outcome,status_class,reason}``: ended transfers;
  ``reason`` says why an aborted one stopped (``idle_timeout``,
  ``client_disconnected``, ...) and which exception ended a failed one;
* ``wsgipipe_sent_bytes_total{via}``: body bytes the client accepted, by how
  they moved (``sendfile``, ``python``, ``offload``, ``none``);
* ``wsgipipe_transfer_duration_seconds{outcome}``: from request to ``close()``;
* ``wsgipipe_transfers_in_flight``: started, not yet closed;
* ``wsgipipe_transfers_stalled``: in flight, and the client took no bytes for
  ``stalled_after`` seconds (5 by default);
* ``wsgipipe_tee_sink_failures_total``: tee sinks that failed and were detached.

This is the only module of wsgipipe that imports ``prometheus_client``.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import make_wsgi_app as _make_wsgi_app

from ._live import GENERATION, Flight
from ._live_routes import Watch

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._body import Body
    from ._record import Transfer

__all__ = [
    "DURATION_BUCKETS",
    "TransferMetrics",
    "default_metrics",
    "exposition_app",
    "mark_process_dead",
    "reason_label",
]

#: Seconds: downloads last from milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60, 300, 900, 3600)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_starting = threading.Lock()  # taken once per process, never per request after that
_UNIT_OR_NUMBER = re.compile(r"[\d.]+.*$")
_NOT_WORD = re.compile(r"[^a-z]+")


def reason_label(record: Transfer) -> str:
    """A low-cardinality ``reason``: ``"idle timeout 30s"`` becomes ``idle_timeout``.

    Numbers and what follows them are dropped (they are in the log line);
    a failed transfer is labelled with its exception's class name.
    """
    if record.outcome == "failed" and record.error is not None:
        return type(record.error).__name__
    if record.outcome != "aborted" or not record.reason:
        return ""
    text = _UNIT_OR_NUMBER.sub("", record.reason.lower())
    return _NOT_WORD.sub("_", text).strip("_")[:40]


def _status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "none"


class TransferMetrics:
    """The metrics, and the observer that feeds them (see the module docstring).

    ``registry`` is where they are registered (the default registry unless
    given). One instance per registry: create it once, at import time of
    your app module, and share it. Updates reach the metrics within
    ``interval`` seconds, from a thread of each process (0: at once, in the
    request's thread); a worker killed with SIGKILL loses at most that.
    A transfer whose client takes no bytes for ``stalled_after`` seconds
    counts as stalled.
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        namespace: str = "wsgipipe",
        *,
        interval: float = 0.25,
        stalled_after: float = 5.0,
    ) -> None:
        self.registry = registry
        self.transfers = Counter(
            "transfers",
            "Transfers ended, by outcome, status class and (for aborted/failed) reason.",
            ["outcome", "status_class", "reason"],
            namespace=namespace,
            registry=registry,
        )
        self.sent_bytes = Counter(
            "sent_bytes",
            "Body bytes the clients accepted, by how they moved.",
            ["via"],
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "transfer_duration_seconds",
            "Seconds from the request to the server's close() of its body.",
            ["outcome"],
            namespace=namespace,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # livesum: a dead worker's transfers are not in flight any more.
        self.in_flight = Gauge(
            "transfers_in_flight",
            "Transfers started and not yet closed.",
            namespace=namespace,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.stalled = Gauge(
            "transfers_stalled",
            "Transfers in flight whose client took no bytes for stalled_after seconds.",
            namespace=namespace,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.tee_sink_failures = Counter(
            "tee_sink_failures",
            "Tee sinks that raised (detached, or failing the response when strict).",
            namespace=namespace,
            registry=registry,
        )
        self.interval = interval
        # Request threads only append to this deque (atomic, no lock); a
        # flusher thread per process turns the events into metric updates,
        # which in multiprocess mode cost microseconds each (a lock and an
        # mmap write). None marks a start; a Transfer marks an end.
        self._events: deque[Transfer | None] = deque()
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._via: dict[str, Counter] = {}
        self._flights: dict[int, Flight] = {}
        self.stalled_after = stalled_after
        self._stalled_now = 0
        self._pid = 0
        self._generation = -1
        logging.getLogger("wsgipipe.tee").addHandler(_TeeFailures(self.tee_sink_failures))

    # -- the observer (wsgipipe._live_routes.Observer) -------------------------
    def started(self, environ: WSGIEnvironment) -> None:
        if self._generation != GENERATION[0] and self.interval:  # first in this process
            self._start_flusher()
        self._events.append(None)

    def streaming(self, environ: WSGIEnvironment, record: Transfer, body: Body) -> None:
        client = environ.get("REMOTE_ADDR", "")
        self._flights[id(record)] = Flight(record, body, client, environ.get("gunicorn.socket"))

    def ended(self, environ: WSGIEnvironment, record: Transfer) -> None:
        self._flights.pop(id(record), None)
        self._events.append(record)
        if not self.interval:
            self.flush()

    # -- turning events into metrics --------------------------------------------------
    def flush(self) -> None:
        """Apply every pending event now (the exposition app does this first)."""
        in_flight = 0
        counts: dict[tuple[str, str, str], list[float]] = {}
        sent: dict[str, int] = {}
        while True:
            try:
                record = self._events.popleft()
            except IndexError:
                break
            if record is None:
                in_flight += 1
                continue
            in_flight -= 1
            outcome: str = record.outcome or "aborted"
            key = (outcome, _status_class(record.status), reason_label(record))
            counts.setdefault(key, []).append(record.duration)
            if record.bytes_sent:
                via = record.notes.get("via", "none")
                sent[via] = sent.get(via, 0) + record.bytes_sent
        if in_flight:
            self.in_flight.inc(in_flight)
        stalled = self._count_stalled()
        if stalled != self._stalled_now:
            self.stalled.set(stalled)
            self._stalled_now = stalled
        for key, durations in counts.items():
            self._count(key, durations)
        for via, total in sent.items():
            counter = self._via.get(via)
            if counter is None:
                counter = self._via[via] = self.sent_bytes.labels(via)
            counter.inc(total)

    def _count_stalled(self) -> int:
        now = time.monotonic()
        stalled = 0
        for flight in list(self._flights.values()):
            flight.sample(now)
            stalled += flight.stalled(now, self.stalled_after)
        return stalled

    def _count(self, key: tuple[str, str, str], durations: list[float]) -> None:
        children = self._children.get(key)
        if children is None:
            children = (self.transfers.labels(*key), self.duration.labels(key[0]))
            self._children[key] = children
        children[0].inc(len(durations))
        observe_many(children[1], durations)

    def _start_flusher(self) -> None:
        with _starting:
            if self._generation == GENERATION[0]:
                return
            self._pid = os.getpid()
            self._events = deque()  # a forked child starts with nothing pending
            self._flights = {}
            # Last: a request thread that sees this generation appends to the
            # new queue, never to the one just replaced.
            self._generation = GENERATION[0]
            threading.Thread(target=self._run, name="wsgipipe-metrics", daemon=True).start()
            atexit.register(self.flush)  # a worker that exits cleanly loses nothing

    def _run(self) -> None:
        pid = self._pid
        while pid == os.getpid():
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # never let one bad update stop the metrics
                logging.getLogger("wsgipipe.prometheus").exception("metrics flush failed")

    # -- wiring ------------------------------------------------------------------
    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """``app`` with every transfer counted (wrapped in a TransferLog if needed)."""
        return Watch(app, self)

    def exposition_app(self) -> WSGIApplication:
        """A WSGI app answering with the text exposition format.

        Under ``PROMETHEUS_MULTIPROC_DIR`` it reads every worker's files, so
        any worker answers for all of them.
        """
        inner = exposition_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            self.flush()  # this process's own figures are never behind
            return inner(environ, start_response)

        return app


def observe_many(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe`` for each value, with one update per bucket touched."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:  # another prometheus_client
        for value in values:
            histogram.observe(value)
        return
    hits = [0] * len(bounds)
    for value in values:
        hits[bisect.bisect_left(bounds, value)] += 1
    for index, count in enumerate(hits):
        if count:
            buckets[index].inc(count)
    total.inc(sum(values))


def exposition_app(registry: CollectorRegistry = REGISTRY) -> WSGIApplication:
    """The exposition of ``registry``, or of all processes in multiprocess mode."""
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    inner = _make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        for _ in range(_SCRAPE_TRIES - 1):
            try:
                return inner(environ, start_response)  # type: ignore[no-any-return]
            except (OSError, struct.error, RuntimeError):
                # A worker's file was being created (a new worker, still
                # empty) or removed while we read it: read the directory again.
                time.sleep(0.01)
        return inner(environ, start_response)  # type: ignore[no-any-return]

    return app


_SCRAPE_TRIES = 3
_default: TransferMetrics | None = None


def default_metrics() -> TransferMetrics:
    """The process's shared :class:`TransferMetrics` on the default registry."""
    global _default
    if _default is None:
        _default = TransferMetrics()
    return _default


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges; call it from gunicorn's ``child_exit``.

    Does nothing outside multiprocess mode.
    """
    if os.environ.get(_MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _TeeFailures(logging.Handler):
    """Counts the errors :class:`~wsgipipe.Tee` logs: each is a sink that failed."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.ERROR)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        self.counter.inc()
