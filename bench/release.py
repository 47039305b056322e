"""Holding on: memory while teeing 1 GiB, and how long a file stays open after
the client aborts or stops reading.

The truth is read from /proc: the worker's VmRSS/VmHWM, and whether the
data file is still in the worker's descriptor table.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

from wsgipipe.testing import GunicornServer, wait_until

from . import apps, clients
from .common import BIG, LABELS, Settings, rounds, say
from .results import Measurement
from .servers import gunicorn, reset_peak_rss, rss_kib

#: How long to wait for a release before calling it "still held".
ABORT_CAP = 15.0
STALL_CAP = 10.0
#: The sync worker's --timeout in the stalled-reader row (the arbiter kill).
SYNC_TIMEOUT = 5


def _start(m: Measurement, name: str, data: str) -> GunicornServer | None:
    """A gunicorn (gthread, 1 worker) for contender ``name``, or None with a note."""
    unavailable = apps.available(name)
    if unavailable:
        m.series(name).note = unavailable
        say(f"  {LABELS[name]}: {unavailable}")
        return None
    m.series(name)
    return gunicorn(name, data, worker_class="gthread", workers=1, threads=4)


# -- peak RSS -------------------------------------------------------------------
def measure_rss(settings: Settings) -> Measurement:
    m = Measurement(
        "rss",
        "Worker RSS growth while streaming 1 GiB with a tee to a slow sink",
        "MiB",
        higher_is_better=False,
    )
    m.notes.append(
        f"The slow sink sleeps {apps.SLOW_SINK_PAUSE * 1e3:g} ms per 64 KiB write; the naive "
        "logger keeps the body and writes it to its sink once at the end."
    )
    with ExitStack() as stack:
        running: dict[str, GunicornServer] = {}
        for name in ("tee_slow", "buffer_log"):
            server = _start(m, name, settings.data)
            if server is not None:
                running[name] = stack.enter_context(server)
        for r, order in rounds(list(running), settings.slow_runs):
            for name in order:
                growth, seconds = _peak_growth(running[name], settings)
                m.series(name).values.append(growth)
                m.series(name).extra.setdefault("seconds", []).append(seconds)
            say(f"rss round {r + 1}/{settings.slow_runs} done")
    return m


def _peak_growth(server: GunicornServer, settings: Settings) -> tuple[float | None, float]:
    (pid,) = server.worker_pids()
    before = rss_kib(pid) or 0
    hwm_reset = reset_peak_rss(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_kib(pid) or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = clients.download(f"{server.url}/{BIG}", timeout=300)
    finally:
        done.set()
        sampler.join()
    if hwm_reset:
        peak[0] = max(peak[0], rss_kib(pid, "VmHWM") or 0)
    if result.status != 200 or result.size != settings.big_size:
        return None, result.seconds
    return (peak[0] - before) / 1024, result.seconds


def _held(m: Measurement, name: str, seconds: float | None, cap: float) -> None:
    """Record a release time; None means the file was still open at ``cap``."""
    series = m.series(name)
    series.values.append(seconds)
    held = sum(v is None for v in series.values)
    if held:
        series.note = f"still held at the {cap:g} s cap in {held} of {len(series.values)} runs"


# -- abort while the source waits ------------------------------------------------
def measure_abort(settings: Settings) -> Measurement:
    m = Measurement(
        "abort",
        f"Client abort to file released (source pauses {apps.SLOW_DELAY:g} s after each chunk)",
        "s",
        higher_is_better=False,
    )
    m.notes.append(
        "The client reads the headers and the first bytes, then closes the socket as a killed "
        f"curl would; a file still open after {ABORT_CAP:g} s counts as a failed run."
    )
    with ExitStack() as stack:
        running: dict[str, GunicornServer] = {}
        for name in ("slow_wsgipipe", "slow_generator"):
            server = _start(m, name, settings.data)
            if server is not None:
                running[name] = stack.enter_context(server)
        for r, order in rounds(list(running), settings.slow_runs):
            for name in order:
                _held(m, name, _abort_once(running[name], settings), ABORT_CAP)
            say(f"abort round {r + 1}/{settings.slow_runs} done")
    return m


def _abort_once(server: GunicornServer, settings: Settings) -> float | None:
    aborted = clients.abort_after_first_chunk(f"{server.url}/{BIG}")
    if not wait_until(lambda: not server.open_files(settings.data), ABORT_CAP, 0.002):
        return None
    return time.monotonic() - aborted


# -- stalled reader --------------------------------------------------------------
STALL = {
    "idle_wsgipipe": ("idle_wsgipipe", "gthread", 30),
    "raw_gthread": ("raw", "gthread", 30),
    "raw_sync": ("raw", "sync", SYNC_TIMEOUT),
}


def measure_stall(settings: Settings) -> Measurement:
    m = Measurement(
        "stall",
        "Time a stalled reader (sends a request, never reads) holds the file",
        "s",
        higher_is_better=False,
    )
    m.notes.append(
        f"wsgipipe's idle timeout is {apps.IDLE_TIMEOUT:g} s; the sync worker runs with "
        f"--timeout {SYNC_TIMEOUT}; a file still open after {STALL_CAP:g} s counts as a failed "
        "run (plain gthread holds it for as long as the reader waits)."
    )
    names = [n for n in STALL if _stall_available(m, n)]
    for r, order in rounds(names, settings.slow_runs):
        for name in order:
            _held(m, name, _stall_once(name, settings), STALL_CAP)
        say(f"stall round {r + 1}/{settings.slow_runs} done")
    return m


def _stall_available(m: Measurement, name: str) -> bool:
    unavailable = apps.available(STALL[name][0])
    m.series(name).note = unavailable or ""
    return unavailable is None


def _stall_once(name: str, settings: Settings) -> float | None:
    app, worker, timeout = STALL[name]
    # A fresh server each run: a gthread worker never lets go of a stalled
    # reader, so its file would still be open in the next run.
    # threads=1: gunicorn silently turns "sync" into gthread when threads > 1.
    threads = 1 if worker == "sync" else 4
    with gunicorn(
        app, settings.data, worker_class=worker, threads=threads, timeout=timeout
    ) as server:
        sock, started = clients.stalled_reader(f"{server.url}/{BIG}")
        try:
            wait_until(lambda: server.open_files(settings.data), 5.0, 0.005)
            released = wait_until(lambda: not server.open_files(settings.data), STALL_CAP, 0.01)
            return time.monotonic() - started if released else None
        finally:
            sock.close()
