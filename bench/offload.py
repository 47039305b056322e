"""One fast 1 GiB download: server CPU per GiB through the offloading worker vs gthread.

Both serve the same app (``bench.apps:build('file_stream')``: a FileStream
handed to ``wsgi.file_wrapper``) from one worker. Under gthread a worker
thread sends it with a blocking ``socket.sendfile``; under wsgipipe's
OffloadWorker the thread sends the headers and the sender thread moves the
bytes with non-blocking ``os.sendfile`` calls driven by epoll. The figure is
the server's user+system CPU (master and worker, from /proc) per GiB, in
rounds that alternate the two; the target is the offloading worker within
1.2x of gthread.

``python -m bench --only offload [--quick]`` runs it alone.
"""

from __future__ import annotations

from contextlib import ExitStack

from . import clients
from .common import BIG, GIB, Settings, rounds, say
from .results import Measurement
from .servers import cpu_seconds, gunicorn, tree

GTHREAD = "gunicorn gthread (blocking sendfile)"
OFFLOAD = "wsgipipe OffloadWorker (sender thread)"
WORKER_CLASSES = {GTHREAD: "gthread", OFFLOAD: "wsgipipe.gunicorn.OffloadWorker"}
TARGET = 1.2
PER_ROUND = 4


def measure(settings: Settings) -> Measurement:
    m = Measurement(
        "offload",
        "Server CPU per GiB, one 1 GiB download over 127.0.0.1 (1 worker, 8 threads)",
        "s/GiB",
        higher_is_better=False,
        baseline=GTHREAD,
    )
    with ExitStack() as stack:
        running = {
            name: stack.enter_context(
                gunicorn("file_stream", settings.data, worker_class=cls, workers=1, threads=8)
            )
            for name, cls in WORKER_CLASSES.items()
        }
        for name, server in running.items():
            _download(m, name, server, settings, warmup=True)
        for r, order in rounds(list(running), settings.runs):
            for name in order:
                _download(m, name, running[name], settings)
            say(f"offload round {r + 1}/{settings.runs} done")
    _conclude(m)
    return m


def _download(
    m: Measurement, name: str, server: object, settings: Settings, *, warmup: bool = False
) -> None:
    pid: int = server.pid  # type: ignore[attr-defined]
    before = cpu_seconds(tree(pid))
    # Several downloads per round: /proc counts CPU in 10 ms ticks.
    results = [clients.download(f"{server.url}/{BIG}") for _ in range(PER_ROUND)]  # type: ignore[attr-defined]
    cpu = cpu_seconds(tree(pid)) - before
    ok = all(r.status == 200 and r.size == settings.big_size for r in results)
    result = results[0]
    if warmup:
        if not ok:
            say(f"  {name}: warm-up got {result.status}, {result.size} bytes")
        return
    series = m.series(name)
    series.values.append(cpu / (PER_ROUND * result.size / GIB) if ok else None)
    series.extra.setdefault("GB/s", []).append(result.size / result.seconds / 1e9 if ok else None)


def _conclude(m: Measurement) -> None:
    ratio = m.ratio(OFFLOAD)
    if ratio is None:
        m.notes.append("No ratio: a contender did not complete its rounds.")
        return
    verdict = "met" if ratio.median <= TARGET else "missed"
    m.notes.append(
        f"OffloadWorker / gthread CPU per GiB: {ratio.median:.2f}x (median of rounds; "
        f"target <= {TARGET}x: {verdict}). CPU is user+system of master and worker; "
        "on loopback the kernel's copy dominates both."
    )
    say(f"  {m.notes[-1]}")
