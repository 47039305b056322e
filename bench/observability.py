"""What metrics and the live page cost: the same stack with and without them, in-process.

Two figures, each paired round by round against the plain stack:

* throughput of a 32 MiB response made of 64 KiB chunks, each written to a
  local socket that a thread drains (the per-chunk cost: none is expected,
  as neither layer touches a chunk);
* time per small request (the per-request cost: a few dict operations, the
  Prometheus updates, one record pushed for the live page).

Metrics run in prometheus_client's multiprocess mode, as under gunicorn; the
live page's sampler thread and the metrics' flusher thread run as they do in
a worker. Time is the process's CPU time (all its threads, the socket's
drain thread included), not wall time: on a machine shared with other work,
wall time mostly measures the neighbours.

``python -m bench.observability`` runs it alone and prints the figures.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from typing import TYPE_CHECKING

from .common import Settings, rounds, say
from .results import Measurement

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CHUNK = 64 * 1024
CHUNKS = 512  # 32 MiB per response
SMALL = b"x" * 1024
CONTENDERS = ["plain", "metrics", "live", "both"]
BATCH = 200


def _chunk_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", str(CHUNK * CHUNKS))])
    return _chunks(bytes(CHUNK))


def _chunks(chunk: bytes) -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield chunk


def _small_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", str(len(SMALL)))])
    return [SMALL]


def _start(status: str, headers: object, exc_info: object = None) -> Callable[[bytes], None]:
    return _no_write


def _no_write(data: bytes) -> None:
    raise AssertionError("unused")


def _serve(
    app: WSGIApplication, environ: WSGIEnvironment, write: Callable[[bytes], object] = len
) -> int:
    """One request, the way a server does it: write each chunk, then close."""
    result = app(dict(environ), _start)
    sent = 0
    try:
        for chunk in result:
            write(chunk)
            sent += len(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return sent


class _Wire:
    """A local socket drained by a thread: each chunk costs a real kernel copy."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        buffer = bytearray(1 << 20)
        with suppress(OSError):
            while self.theirs.recv_into(buffer):
                pass

    def close(self) -> None:
        self.ours.close()
        self.thread.join(5)
        self.theirs.close()


def build(base: WSGIApplication, name: str, live_dir: str) -> WSGIApplication:
    from wsgipipe import stack
    from wsgipipe._live import Live

    live = Live(live_dir) if name in ("live", "both") else False
    return stack(base, metrics=name in ("metrics", "both"), live=live)


def _environ(path: str) -> WSGIEnvironment:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }


def _throughput(app: WSGIApplication, seconds: float, wire: _Wire) -> float:
    environ = _environ("/big")
    sent = 0
    started = time.process_time()
    while True:
        sent += _serve(app, environ, wire.ours.sendall)
        elapsed = time.process_time() - started
        if elapsed >= seconds:
            return sent / elapsed / 1e6


def _per_request(app: WSGIApplication, seconds: float) -> float:
    environ = _environ("/small")
    count = 0
    started = time.process_time()
    while True:
        for _ in range(BATCH):
            _serve(app, environ)
        count += BATCH
        elapsed = time.process_time() - started
        if elapsed >= seconds:
            return elapsed / count * 1e6


def _prepare() -> str:
    # Like gunicorn's workers: metric values in files, set before the import.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-prom-"))
    return tempfile.mkdtemp(prefix="bench-live-")


def measure_throughput(settings: Settings) -> Measurement:
    m = Measurement(
        "obs_throughput",
        "Throughput of 64 KiB chunks, plain stack vs metrics / live page / both",
        "MB/s",
        higher_is_better=True,
        baseline="plain",
    )
    live_dir = _prepare()
    ready = {name: build(_chunk_app, name, live_dir) for name in CONTENDERS}
    wire = _Wire()
    try:
        _paired_rounds(m, settings, "throughput", lambda n, s: _throughput(ready[n], s, wire))
    finally:
        wire.close()
    _summarise(m, "MB/s")
    return m


def measure_requests(settings: Settings) -> Measurement:
    m = Measurement(
        "obs_request",
        "Time per small request, plain stack vs metrics / live page / both",
        "µs",
        higher_is_better=False,
        baseline="plain",
    )
    live_dir = _prepare()
    ready = {name: build(_small_app, name, live_dir) for name in CONTENDERS}
    _paired_rounds(m, settings, "per-request", lambda n, s: _per_request(ready[n], s))
    _summarise(m, "µs")
    return m


def _paired_rounds(
    m: Measurement, settings: Settings, what: str, one: Callable[[str, float], float]
) -> None:
    """A warm-up call of ``one(contender, seconds)`` each (it also starts the live page's
    sampler), then ``settings.runs`` rounds of all contenders in rotated order."""
    for name in CONTENDERS:
        one(name, 0.1)
    for r, order in rounds(CONTENDERS, settings.runs):
        for name in order:
            m.series(name).values.append(one(name, settings.inprocess_seconds))
        say(f"observability {what} round {r + 1}/{settings.runs} done")


def _summarise(m: Measurement, unit: str) -> None:
    """Paired medians, and best-of-rounds figures (noise on a shared machine only adds)."""
    plain = m.series("plain").done()
    for name in CONTENDERS[1:]:
        values = m.series(name).done()
        if len(values) != len(plain) or not values:
            continue
        if unit == "µs":
            extra = statistics.median(v - p for v, p in zip(values, plain, strict=True))
            best = min(values) - min(plain)
            m.notes.append(
                f"{name}: +{extra:.2f} µs per request (paired median; best-of +{best:.2f})"
            )
        else:
            ratio = statistics.median(v / p for v, p in zip(values, plain, strict=True))
            best = max(values) / max(plain)
            m.notes.append(
                f"{name}: {ratio:.3f}x plain throughput (paired median; best-of {best:.3f}x)"
            )
        say("  " + m.notes[-1])


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    seconds = float(argv[1]) if len(argv) > 1 else 0.5
    settings = Settings(runs=runs, inprocess_seconds=seconds)
    for section in (measure_throughput, measure_requests):
        m = section(settings)
        for name in CONTENDERS:
            say(f"{m.key} {name}: median {m.series(name).median:.2f} {m.unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
