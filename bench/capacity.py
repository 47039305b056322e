"""Capacity: how many slow readers a deployment holds while a new client still gets served.

N clients each download ``big.bin`` at about 4 KB/s (2 KiB every 0.5 s, a
phone on a bad network), all driven by one selector loop in a separate client
process with a small receive buffer. While they hold on, this process asks
for the 1 KiB ``small.txt`` again and again on fresh connections and records
how long each answer takes. Per contender and N, on a server started for that
point alone: p50/p99 of the small request and how many failed, how many slow
downloads got their response started, the workers' RSS growth and thread
count, and the server's CPU over the window.

The contenders serve the same stack (``wsgipipe.stack(static_app(data))``,
what ``wsgipipe serve`` runs) with 2 workers: plain gthread (8 threads),
wsgipipe's offloading worker (8 threads), the gevent worker, and nginx in
front of gthread answering with ``X-Accel-Redirect`` (the ceiling).

``python -m bench.capacity hold PORT PATH COUNT`` is the client process.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import importlib.util
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BIG, SMALL, Settings, rounds, say
from .results import Measurement, Results
from .servers import REPO, Nginx, cpu_seconds, nginx_binary, rss_kib, tree

COUNTS = (10, 100, 1000, 3000)
QUICK_COUNTS = (10, 100)
BITE, EVERY, RCVBUF = 2048, 0.5, 4096  # about 4 KB/s per reader
WORKERS, THREADS, CONNECTIONS = 2, 8, 4000
SMALL_TIMEOUT = 2.0  # a small request slower than this counts as failed
SETTLE = 2.0  # seconds after the ramp, so the window sees steady state, not the first fill
WINDOW = 4.0  # seconds of small requests per point
MAX_SAMPLES = 60
OFFLOAD_WORKER = "wsgipipe.gunicorn.OffloadWorker"
INTERNAL = "/_wsgipipe_files/"

LABELS = {
    "gthread": "plain gunicorn gthread (2 x 8 threads)",
    "offload": "wsgipipe OffloadWorker (2 x 8 threads)",
    "gevent": "gunicorn gevent (2 workers)",
    "nginx": "nginx X-Accel-Redirect, gthread behind (ceiling)",
}
TARGET_P99, TARGET_RSS_MIB, TARGET_N = 0.050, 64.0, 1000
#: bench/charts.py's palette: baseline green, wsgipipe orange, others purple (and pink).
COLORS = {"gthread": "#1b9e77", "offload": "#d95f02", "gevent": "#7570b3", "nginx": "#e7298a"}


# -- the apps gunicorn runs (``bench.capacity:app`` / ``:offloaded``) ----------
def _root() -> str:
    return os.environ.get("WSGIPIPE_TEST_ROOT", ".")


def build(offload: bool = False) -> Any:
    """What ``wsgipipe serve`` runs; with ``offload``, Static answers X-Accel-Redirect."""
    from wsgipipe import FileErrors, Static, stack, static_app

    if offload:
        return stack(
            FileErrors(Static(_root(), offload="x-accel-redirect", offload_prefix=INTERNAL))
        )
    return stack(static_app(_root()))


# -- contenders -------------------------------------------------------------------
@dataclass
class Running:
    """A started contender: where to connect and which processes are the server."""

    port: int
    pids: Callable[[], list[int]]  # every process of the server (for CPU)
    workers: Callable[[], list[int]]  # the processes that hold transfers (RSS, threads)


def unavailable(name: str) -> str | None:
    """Why contender ``name`` cannot run here, or None."""
    if name == "offload":
        module, _, attr = OFFLOAD_WORKER.rpartition(".")
        try:
            getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            return f"not available yet ({exc})"
    if name == "gevent" and importlib.util.find_spec("gevent") is None:
        return "skipped: gevent is not installed"
    if name == "nginx" and nginx_binary() is None:
        return "skipped: nginx is not installed (make bench installs it as root)"
    return None


def _gunicorn(worker_class: str, data: str, offload: bool = False) -> Any:
    from wsgipipe.testing import GunicornServer

    env = {
        "WSGIPIPE_TEST_ROOT": data,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = ["--worker-connections", str(CONNECTIONS), "--backlog", "4096"]
    return GunicornServer(
        f"bench.capacity:build({offload!r})",
        worker_class=worker_class,
        workers=WORKERS,
        threads=THREADS,
        env=env,
        cwd=REPO,
        args=args,
    )


class BigNginx(Nginx):
    """The shared nginx launcher, with room for thousands of connections."""

    def command(self) -> list[str]:
        cmd = super().command()
        conf = Path(cmd[cmd.index("-c") + 1])
        text = conf.read_text().replace("worker_connections 256;", "worker_connections 16384;")
        conf.write_text("worker_rlimit_nofile 20000;\n" + text)
        return cmd


@contextlib.contextmanager
def start(name: str, data: str) -> Iterator[Running]:
    worker_class = {"gthread": "gthread", "offload": OFFLOAD_WORKER, "gevent": "gevent"}
    with ExitStack() as stack:
        if name in worker_class:
            g = stack.enter_context(_gunicorn(worker_class[name], data))
            yield Running(g.port, lambda: tree(g.pid), g.worker_pids)
            return
        g = stack.enter_context(_gunicorn("gthread", data, offload=True))
        n = stack.enter_context(BigNginx(data, upstream=g.port, internal=INTERNAL))

        def both() -> list[int]:
            return tree(n.pid) + tree(g.pid)

        yield Running(n.port, both, lambda: n.worker_pids() + g.worker_pids())


# -- one point of the curve -------------------------------------------------------
@dataclass
class Point:
    latencies: list[float] = field(default_factory=list)  # seconds, timeouts at SMALL_TIMEOUT
    failed: int = 0
    started: int = 0  # slow downloads whose status line arrived
    rss_growth_mib: float = 0.0
    threads: int = 0
    cpu_percent: float = 0.0

    def percentile(self, q: int) -> float | None:
        if not self.latencies:
            return None
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


def measure_point(running: Running, count: int) -> Point:
    point = Point()
    for _ in range(4):  # every worker imported the app and answered once
        small_request(running.port)
    before = _sum(rss_kib, running.workers())
    with _readers(running.port, count) as client:
        point.started = client.wait_started(count, ramp=10.0 + count / 200)
        time.sleep(SETTLE)
        cpu0, t0 = cpu_seconds(running.pids()), time.monotonic()
        while time.monotonic() - t0 < WINDOW and len(point.latencies) < MAX_SAMPLES:
            took = small_request(running.port)
            point.latencies.append(SMALL_TIMEOUT if took is None else took)
            point.failed += took is None
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        point.cpu_percent = 100 * (cpu_seconds(running.pids()) - cpu0) / elapsed
        point.rss_growth_mib = (_sum(rss_kib, running.workers()) - before) / 1024
        point.threads = _sum(_threads, running.workers())
        point.started = max(point.started, client.latest().get("started", 0))
    return point


def small_request(port: int) -> float | None:
    """Seconds for a new client's GET of the small file, None if it failed or timed out."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SMALL_TIMEOUT)
    try:
        conn.request("GET", f"/{SMALL}")
        response = conn.getresponse()
        body = response.read()
        ok = response.status == 200 and len(body) > 0
    except OSError:
        ok = False
    finally:
        conn.close()
    took = time.monotonic() - started
    return took if ok and took < SMALL_TIMEOUT else None


def _sum(read: Callable[[int], int | None], pids: list[int]) -> int:
    return sum(read(pid) or 0 for pid in pids)


def _threads(pid: int) -> int | None:
    return rss_kib(pid, "Threads")


class _Client:
    """The slow-reader process, and its latest status line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.status: dict[str, int] = {}

    def latest(self) -> dict[str, int]:
        """The last complete status line the client printed (never waits)."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 65536):
                self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if lines and lines[-1]:
            self.status = json.loads(lines[-1])
        return self.status

    def wait_started(self, count: int, ramp: float) -> int:
        """Until every download started, or none started for 3 s once all are connected."""
        deadline, last, since = time.monotonic() + ramp, -1, time.monotonic()
        while time.monotonic() < deadline:
            status = self.latest()
            started = status.get("started", 0)
            if started >= count:
                break
            if started != last:
                last, since = started, time.monotonic()
            elif status.get("connected", 0) >= count and time.monotonic() - since > 3:
                break
            time.sleep(0.1)
        return self.latest().get("started", 0)


@contextlib.contextmanager
def _readers(port: int, count: int) -> Iterator[_Client]:
    cmd = [sys.executable, "-m", "bench.capacity", "hold", str(port), f"/{BIG}", str(count)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    try:
        yield _Client(proc)
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the client's signal to hang up
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


# -- the client process -------------------------------------------------------------
def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard one (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class _Reader:
    sock: socket.socket
    slot: int
    connected: bool = False
    started: bool = False
    done: bool = False


def hold(port: int, path: str, count: int) -> None:
    """N slow readers in one selector loop until stdin closes; status lines on stdout."""
    raise_nofile()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    slots, step = 10, EVERY / 10  # each reader reads once per EVERY, in its slot
    readers: list[_Reader] = []
    connecting = failed = 0
    handled, last_report = int(time.monotonic() / step), 0.0
    while True:
        while len(readers) < count and connecting < 128:  # a ramp the backlog can take
            readers.append(_connect(sel, port, len(readers) % slots))
            connecting += 1
        for key, _ in sel.select(step):
            if key.data is None:  # stdin: closed means hang up
                if not sys.stdin.readline():
                    for r in readers:
                        r.sock.close()
                    return
                continue
            reader, connecting = key.data, connecting - 1
            sel.unregister(reader.sock)
            if reader.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                reader.connected = True
                with contextlib.suppress(OSError):
                    reader.sock.send(request)
            else:
                failed += 1
                reader.done = True
        due = int(time.monotonic() / step)
        while handled < due:
            handled += 1
            for r in readers:
                if r.slot == handled % slots and r.connected and not r.done:
                    failed += _read(r)
        if time.monotonic() - last_report >= 0.2:
            last_report = time.monotonic()
            connected = sum(r.connected for r in readers)
            started = sum(r.started for r in readers)
            print(json.dumps({"connected": connected, "started": started, "failed": failed}))
            sys.stdout.flush()


def _connect(sel: selectors.BaseSelector, port: int, slot: int) -> _Reader:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    reader = _Reader(sock, slot)
    sel.register(sock, selectors.EVENT_WRITE, reader)
    return reader


def _read(reader: _Reader) -> int:
    """One bite; 1 if the server ended the download (a failure for a slow reader)."""
    try:
        data = reader.sock.recv(BITE)
    except BlockingIOError:
        return 0
    except OSError:
        data = b""
    if not data:
        reader.done = True
        reader.sock.close()
        return 1
    if not reader.started and data.startswith(b"HTTP/1.1 200"):
        reader.started = True
    return 0


# -- the section ------------------------------------------------------------------
def measure(settings: Settings) -> Measurement:
    counts = QUICK_COUNTS if settings.quick else COUNTS
    m = Measurement(
        "capacity",
        "Capacity: a new client's small request while N slow readers download",
        "s",
        higher_is_better=False,
    )
    raise_nofile()
    names = [n for n in LABELS if not _skip(m, n)]
    points: Points = {}
    for r, order in rounds(names, settings.slow_runs):
        for count in counts:
            for name in order:
                with start(name, settings.data) as running:
                    point = measure_point(running, count)
                points.setdefault((name, count), []).append(point)
                m.series(f"{name}@{count}").values.append(point.percentile(99))
                say(f"  {LABELS[name]}, N={count}: {_summary(point)}")
        say(f"capacity round {r + 1}/{settings.slow_runs} done")
    m.notes += notes(points, names, counts, settings.slow_runs)
    for key, series in m.contenders.items():
        name, _, n = key.partition("@")
        runs = points.get((name, int(n)), [])
        series.extra.update({k: [float(getattr(p, k)) for p in runs] for k in _EXTRA})
    return m


_EXTRA = ("failed", "started", "rss_growth_mib", "threads", "cpu_percent")


def _skip(m: Measurement, name: str) -> bool:
    why = unavailable(name)
    if why:
        say(f"  {LABELS[name]}: {why}")
        m.notes.append(f"- {LABELS[name]}: {why}.")
    return why is not None


def _summary(p: Point) -> str:
    p50, p99 = p.percentile(50), p.percentile(99)
    return (
        f"p50 {_ms(p50)}, p99 {_ms(p99)}, failed {p.failed}/{len(p.latencies)}, "
        f"started {p.started}, RSS +{p.rss_growth_mib:.1f} MiB, {p.threads} threads, "
        f"CPU {p.cpu_percent:.0f}%"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.0f} s"


def _median(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done else None


Points = dict[tuple[str, int], list[Point]]


def table(points: Points, names: list[str], counts: tuple[int, ...]) -> list[str]:
    """The capacity curve: medians over rounds, one row per contender and N."""
    head = ["contender", "N slow readers", "downloads started", "small request p50", "p99"]
    head += ["failed", "worker RSS growth", "threads", "server CPU"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        for count in counts:
            runs = points.get((name, count), [])
            if not runs:
                continue
            p50 = _median([p.percentile(50) for p in runs])
            p99 = _median([p.percentile(99) for p in runs])
            failed = sum(p.failed for p in runs)
            asked = sum(len(p.latencies) for p in runs)
            row = [
                LABELS[name],
                f"{count:,}",
                f"{_median([float(p.started) for p in runs]):,.0f}",
                _ms(p50),
                _ms(p99),
                f"{failed}/{asked}",
                f"{_median([p.rss_growth_mib for p in runs]):+.1f} MiB",
                f"{_median([float(p.threads) for p in runs]):.0f}",
                f"{_median([p.cpu_percent for p in runs]):.0f}%",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def notes(points: Points, names: list[str], counts: tuple[int, ...], runs: int) -> list[str]:
    out = [
        f"Each slow reader reads {BITE} bytes every {EVERY:g} s (about 4 KB/s) with "
        f"SO_RCVBUF={RCVBUF}, all from one selector loop in a separate process. A fresh "
        f"server per point; small requests (new connection each, timeout {SMALL_TIMEOUT:g} s, "
        f"counted as failed and as {SMALL_TIMEOUT:g} s in the percentiles) for {WINDOW:g} s "
        f"(at most {MAX_SAMPLES}), so p99 is close to the slowest one. Medians over {runs} "
        "round(s) on a shared 2-core machine (noisy: read the orders of magnitude). RSS and "
        "threads: the worker processes (nginx row: nginx's and gunicorn's); CPU: all server "
        "processes over the window, in % of one core.",
        "",
        *table(points, names, counts),
        "",
        *verdicts(points),
        "",
        "![capacity](capacity.png)",
        "",
        "The table below is the small request's p99 per round (seconds).",
    ]
    return out


def verdicts(points: Points) -> list[str]:
    runs = points.get(("offload", TARGET_N), [])
    if not runs:
        return [f"- Targets at N={TARGET_N:,} for the offloading worker: not measured."]
    p99 = max(p.percentile(99) or SMALL_TIMEOUT for p in runs)
    rss = max(p.rss_growth_mib for p in runs)
    failed = sum(p.failed for p in runs)
    return [
        f"- offload worker, N={TARGET_N:,}, worst round: small-request p99 {_ms(p99)} "
        f"(target <= {_ms(TARGET_P99)}: {_ok(p99 <= TARGET_P99)}), RSS growth {rss:.1f} MiB "
        f"(target < {TARGET_RSS_MIB:g} MiB: {_ok(rss < TARGET_RSS_MIB)}), failed small "
        f"requests {failed} (target 0: {_ok(failed == 0)})."
    ]


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"


# -- the chart ------------------------------------------------------------------
def chart(results: Results, directory: str) -> list[str]:
    """capacity.png: p99 and RSS growth against N, one line per contender."""
    m = results.measurements.get("capacity")
    if m is None:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no capacity chart (pip install -e '.[bench]')")
        return []
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 4))
    for name in LABELS:
        keys = sorted((int(k.split("@")[1]), k) for k in m.contenders if k.startswith(name + "@"))
        if not keys:
            continue
        ns = [n for n, _ in keys]
        p99 = [(m.contenders[k].median or SMALL_TIMEOUT) * 1000 for _, k in keys]
        started = [m.contenders[k].extra_median("started") or 0.0 for _, k in keys]
        rss = [m.contenders[k].extra_median("rss_growth_mib") or 0.0 for _, k in keys]
        style = {"marker": "o", "label": LABELS[name], "color": COLORS[name]}
        left.plot(ns, p99, **style)
        middle.plot(ns, started, **style)
        right.plot(ns, rss, **style)
    left.axhline(TARGET_P99 * 1000, color="grey", linestyle=":", linewidth=1, label="50 ms target")
    left.set(xscale="log", yscale="log", xlabel="slow readers (N)", ylabel="ms")
    left.set_title("new client's small request, p99 (timeout 2 s)", fontsize=9)
    middle.set(xscale="log", yscale="log", xlabel="slow readers (N)", ylabel="downloads")
    middle.set_title("slow downloads started", fontsize=9)
    right.set(xscale="log", xlabel="slow readers (N)", ylabel="MiB")
    right.set_title("worker RSS growth", fontsize=9)
    # Below the panels, so it never hides a line.
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    for ax in (left, middle, right):
        ax.tick_params(labelsize=8)
    path = os.path.join(directory, "capacity.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [path]


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "hold":
        hold(int(argv[1]), argv[2], int(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
