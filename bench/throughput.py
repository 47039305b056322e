"""Through a real gunicorn: 1 GiB downloads (GB/s, server CPU) and small-file req/s.

Every contender gets its own gunicorn (gthread, 1 worker) started before the
first round and kept until the last, plus nginx as the ceiling. Rounds visit
the servers in rotating order, one download (or one wrk run) each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Protocol

from . import apps, clients
from .common import BIG, GIB, LABELS, SMALL, Settings, rounds, say
from .results import Measurement
from .servers import Nginx, cpu_seconds, gunicorn, nginx_binary, tree

#: contender -> app built in the server (None: nginx).
DOWNLOAD = {
    "raw": "raw",
    "file_stream": "file_stream_logged",
    "tee_discard": "tee_discard",
    "tee_sha256": "tee_sha256",
    "generator": "generator",
    "send_file": "send_file",
    "whitenoise": "whitenoise",
    "nginx": None,
}
REQUESTS = {
    "static": "static",
    "whitenoise": "whitenoise",
    "shared_data": "shared_data",
    "send_file": "send_file",
    "raw": "raw",
    "file_stream": "file_stream",
    "nginx": None,
}
THREADS = 8
CONNECTIONS = 8


class Server(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int: ...


@dataclass
class Running:
    server: Server

    def log_text(self) -> str:
        # gunicorn's log carries wsgipipe's transfer lines; nginx has none.
        return str(getattr(self.server, "log", ""))


@contextmanager
def servers(
    contenders: dict[str, str | None], settings: Settings, m: Measurement
) -> Iterator[dict[str, Running]]:
    """Start a server per contender; a contender that cannot start gets a note."""
    running: dict[str, Running] = {}
    with ExitStack() as stack:
        for name, app in contenders.items():
            try:
                running[name] = Running(stack.enter_context(_server(app, settings)))
            except Exception as exc:
                m.series(name).note = _why(exc)
                say(f"  {LABELS[name]}: {m.series(name).note}")
                continue
            m.series(name)
        yield running


def _server(app: str | None, settings: Settings) -> AbstractContextManager[Server]:
    if app is None:
        if nginx_binary() is None:
            raise RuntimeError("skipped: nginx is not installed (make bench installs it as root)")
        return Nginx(settings.data)
    unavailable = apps.available(app)
    if unavailable:
        raise RuntimeError(unavailable)
    return gunicorn(app, settings.data, worker_class="gthread", workers=1, threads=THREADS)


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def measure_download(settings: Settings) -> Measurement:
    m = Measurement(
        "download",
        "1 GiB download over 127.0.0.1 through gunicorn (gthread, 1 worker)",
        "GB/s",
        higher_is_better=True,
        baseline="raw",
    )
    m.notes.append("GB/s is 10^9 bytes per second; CPU is the server's user+system time per GiB.")
    with servers(DOWNLOAD, settings, m) as running:
        for name, run in running.items():
            _download(m, name, run, settings, warmup=True)
        for r, order in rounds(list(running), settings.runs):
            for name in order:
                _download(m, name, running[name], settings)
            say(f"download round {r + 1}/{settings.runs} done")
        for name, run in running.items():
            via = sorted(set(re.findall(r"via=(\w+)", run.log_text())))
            if via:
                m.series(name).note = "transfer line: " + ", ".join(f"via={v}" for v in via)
    return m


def _download(
    m: Measurement, name: str, run: Running, settings: Settings, warmup: bool = False
) -> None:
    pids = tree(run.server.pid)
    before = cpu_seconds(pids)
    result = clients.download(f"{run.server.url}/{BIG}")
    cpu = cpu_seconds(tree(run.server.pid)) - before
    ok = result.status == 200 and result.size == settings.big_size
    if warmup:
        if not ok:
            say(f"  {LABELS[name]}: warm-up got {result.status}, {result.size} bytes")
        return
    series = m.series(name)
    series.values.append(result.size / result.seconds / 1e9 if ok else None)
    series.extra.setdefault("cpu_s_per_gib", []).append(cpu / (result.size / GIB) if ok else None)


def measure_requests(settings: Settings) -> Measurement:
    m = Measurement(
        "requests",
        f"Small-file (1 KiB) requests/s through gunicorn (gthread, 1 worker, {THREADS} threads; "
        f"{CONNECTIONS} connections)",
        "req/s",
        higher_is_better=True,
        baseline="whitenoise",
    )
    with servers(REQUESTS, settings, m) as running:
        for name, run in running.items():
            _check_small(m, name, run)
            clients.load(f"{run.server.url}/{SMALL}", 1, CONNECTIONS)  # warm up
        for r, order in rounds(list(running), settings.runs):
            for name in order:
                rate, errors = clients.load(
                    f"{running[name].server.url}/{SMALL}", settings.wrk_seconds, CONNECTIONS
                )
                m.series(name).values.append(rate if not errors else None)
                if errors:
                    m.series(name).note = f"{errors} failed requests in a run"
            say(f"requests round {r + 1}/{settings.runs} done")
    return m


def _check_small(m: Measurement, name: str, run: Running) -> None:
    result = clients.download(f"{run.server.url}/{SMALL}")
    if result.status != 200 or result.size != 1024:
        m.series(name).note = f"wrong answer: {result.status}, {result.size} bytes"
