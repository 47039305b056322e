"""Sources that are not files: a child process, an upstream, a streamed zip.

One row per source for wsgipipe (ProcessStream, Proxy, ZipStream) and one for
the naive generator people write for the same job, both under the same real
gunicorn (gthread, one worker), fetched by curl. Reported: throughput and the
worker's CPU seconds per GiB sent (from /proc/<worker>/stat; a child
process's own CPU is not the worker's). The naive versions are what the
issue threads show: a generator over ``Popen.stdout``, over urllib3's
``stream()``, and over ``zipfile`` writing into a buffer.

``python -m bench --only sources`` runs it; ``python -m bench.sources`` too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .common import Settings, rounds, say
from .results import Measurement

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CONTENDERS = [
    "process: wsgipipe",
    "process: naive",
    "proxy: wsgipipe",
    "proxy: naive",
    "zip: wsgipipe",
    "zip: naive",
]
MIB = 1024 * 1024
CHUNK = 64 * 1024
DATA = os.environ.get("WSGIPIPE_SOURCES_DATA", "")
FILE = "source.bin"
FOLDER = "folder"


# -- the apps (run by gunicorn as bench.sources:app / bench.sources:upstream) ----------
def _ok(start_response: StartResponse, kind: str) -> None:
    start_response("200 OK", [("Content-Type", kind)])


def _naive_process(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    proc = subprocess.Popen(["cat", os.path.join(DATA, FILE)], stdout=subprocess.PIPE)
    _ok(start_response, "application/octet-stream")
    assert proc.stdout is not None
    return iter(lambda: proc.stdout.read(CHUNK), b"")  # type: ignore[union-attr]


def _naive_proxy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:

    response = _POOL.request("GET", "/" + FILE, preload_content=False)
    _ok(start_response, response.headers.get("Content-Type", "application/octet-stream"))
    return response.stream(CHUNK)


def _naive_zip(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    _ok(start_response, "application/zip")
    return _zip_generator(os.path.join(DATA, FOLDER))


class _Buffer:
    """What the zipfile-on-a-stream recipes write into: a list drained by the generator."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def _zip_generator(folder: str) -> Iterator[bytes]:
    buffer = _Buffer()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            with open(path, "rb") as f, archive.open(name, "w", force_zip64=True) as out:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                    yield b"".join(buffer.parts)
                    buffer.parts.clear()
    yield b"".join(buffer.parts)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    from wsgipipe import process_response, zip_response

    path = environ.get("PATH_INFO", "")
    if path == "/process/wsgipipe":
        argv = ["cat", os.path.join(DATA, FILE)]
        return process_response(environ, start_response, argv)
    if path == "/proxy/wsgipipe":
        environ["PATH_INFO"] = "/" + FILE
        return _PROXY(environ, start_response)
    if path == "/zip/wsgipipe":
        return zip_response(environ, start_response, DATA, folder=FOLDER)
    naive = {"/process/naive": _naive_process, "/proxy/naive": _naive_proxy}
    return naive.get(path, _naive_zip)(environ, start_response)


def upstream(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    from wsgipipe import static_app

    return static_app(DATA)(environ, start_response)


if os.environ.get("WSGIPIPE_SOURCES_UPSTREAM"):
    import urllib3

    from wsgipipe import Proxy

    _PROXY = Proxy(os.environ["WSGIPIPE_SOURCES_UPSTREAM"])
    _POOL = urllib3.connection_from_url(os.environ["WSGIPIPE_SOURCES_UPSTREAM"], maxsize=10)


# -- the measurement --------------------------------------------------------------------
def _prepare(data: str, size: int) -> None:
    os.makedirs(os.path.join(data, FOLDER), exist_ok=True)
    block = os.urandom(MIB)
    targets = [(FILE, size)] + [(f"{FOLDER}/part{i}.bin", size // 4) for i in range(4)]
    for name, length in targets:
        path = os.path.join(data, name)
        if os.path.exists(path) and os.path.getsize(path) == length:
            continue
        with open(path, "wb") as f:
            for _ in range(length // MIB):
                f.write(block)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fetch(url: str) -> tuple[int, float]:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.split()
    if out[0] != "200":
        raise RuntimeError(f"{url} answered {out[0]}")
    return int(out[1]), float(out[2])


def measure(settings: Settings) -> Measurement:
    from wsgipipe.testing import GunicornServer

    size = min(settings.big_size, (64 if settings.quick else 256) * MIB)
    data = os.path.join(settings.data, "sources")
    _prepare(data, size)
    m = Measurement(
        "sources",
        f"Sources: a child process, an upstream, a zip ({size // MIB} MiB each) vs naive code",
        "MiB/s",
        higher_is_better=True,
    )
    env = {"WSGIPIPE_SOURCES_DATA": data}
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with GunicornServer("bench.sources:upstream", threads=4, cwd=cwd, env=env) as up:
        env["WSGIPIPE_SOURCES_UPSTREAM"] = up.url
        with GunicornServer("bench.sources:app", threads=4, cwd=cwd, env=env) as server:
            [worker] = server.worker_pids()
            for r, order in rounds(CONTENDERS, settings.slow_runs):
                for name in order:
                    source, kind = name.split(": ")
                    before = _cpu(worker)
                    sent, took = _fetch(f"{server.url}/{source}/{kind}")
                    cpu = (_cpu(worker) - before) / (sent / 1024**3)
                    m.series(name).values.append(sent / MIB / took)
                    m.series(name).extra.setdefault("cpu_s_per_gib", []).append(cpu)
                say(f"sources round {r + 1}/{settings.slow_runs} done")
    for source in ("process", "proxy", "zip"):
        ours, naive = m.series(f"{source}: wsgipipe"), m.series(f"{source}: naive")
        if ours.median and naive.median:
            m.notes.append(
                f"- {source}: wsgipipe / naive throughput {ours.median / naive.median:.2f}x"
            )
    for name in CONTENDERS:
        s = m.series(name)
        cpu = s.extra_median("cpu_s_per_gib") or 0
        say(f"  {name}: {s.median or 0:.0f} MiB/s, {cpu:.2f} worker CPU s/GiB")
    return m


if __name__ == "__main__":
    settings = Settings.quick_run(slow_runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    started = time.monotonic()
    result = measure(settings)
    from .report import measurement_table

    print("\n".join([*result.notes, "", *measurement_table(result)]))
    say(f"took {time.monotonic() - started:.0f}s")
