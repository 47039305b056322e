"""Worker CPU per GiB for four foreign apps sending files their own way, bare and wrapped.

Flask ``send_file``, Django ``FileResponse``, WhiteNoise and werkzeug's
``SharedDataMiddleware`` (``tests/apps/wrap_app.py``) under gunicorn gthread,
each reached three ways: bare (``raw``), in ``TransferLog`` (``tl``) and in
``TransferLog(FileErrors(...))`` (``tlfe``). Each round downloads the same
file ``downloads`` times per contender, in rotated order, and reads the
worker's utime + stime from ``/proc/<pid>/stat`` before and after. The figure
is CPU milliseconds per GiB sent (median of the rounds); the ratio is
wrapped ÷ bare in the same round, so 1.0 means wrapping costs no CPU.

    python -m bench.wrapping [--size MIB] [--downloads N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from wsgipipe.testing import GunicornServer

from . import clients
from .common import Settings, rounds, say
from .results import Measurement
from .servers import cpu_seconds

APPS_DIR = Path(__file__).resolve().parent.parent / "tests" / "apps"
FOREIGN = ("flask", "django", "whitenoise", "shared")
WRAPPINGS = ("raw", "tl", "tlfe")
NAME = "wrap.bin"
GIB = 1 << 30


def measure(settings: Settings) -> Measurement:
    """The bench section: a 256 MiB file (64 MiB quick), 4 downloads per round."""
    size = (64 if settings.quick else 256) << 20
    return run(settings.data, size, downloads=4, runs=settings.runs)


def run(data: str, size: int, *, downloads: int, runs: int) -> Measurement:
    m = Measurement(
        "wrapping", "Worker CPU per GiB, foreign apps bare and wrapped", "ms/GiB", False
    )
    m.notes.append(
        f"gunicorn gthread, one worker; {downloads} downloads of {size >> 20} MiB per contender "
        "and round; tl = TransferLog(app), tlfe = TransferLog(FileErrors(app))."
    )
    _write(Path(data) / NAME, size)
    env = {"WSGIPIPE_TEST_ROOT": data}
    server = GunicornServer(
        "wrap_app:app", worker_class="gthread", threads=4, cwd=APPS_DIR, env=env
    )
    names = [f"{app} {wrapping}" for app in FOREIGN for wrapping in WRAPPINGS]
    with server:
        (pid,) = server.worker_pids()
        for name in names:
            _get(server, name, size)  # imports and caches warm before anything counts
        for r, order in rounds(names, runs):
            for name in order:
                before = cpu_seconds([pid])
                for _ in range(downloads):
                    _get(server, name, size)
                used = cpu_seconds([pid]) - before
                m.series(name).values.append(used * 1e3 / (downloads * size / GIB))
            say(f"wrapping round {r + 1}/{runs} done")
    return m


def _get(server: GunicornServer, name: str, size: int) -> None:
    app, wrapping = name.split()
    got = clients.download(f"{server.url}/{wrapping}/{app}/{NAME}")
    if got.size != size:
        raise RuntimeError(f"{name}: got {got.size} of {size} bytes")


def _write(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)  # real data: no sparse holes for sendfile to skip
        for _ in range(size >> 20):
            f.write(block)


def ratios(m: Measurement) -> list[tuple[str, float | None, float | None, float | None]]:
    """(app, bare ms/GiB, wrapped ms/GiB, median per-round ratio) for tl and tlfe."""
    rows = []
    for app in FOREIGN:
        bare = m.series(f"{app} raw")
        for wrapping in WRAPPINGS[1:]:
            wrapped = m.series(f"{app} {wrapping}")
            paired = [w / b for w, b in zip(wrapped.values, bare.values, strict=False) if w and b]
            ratio = statistics.median(paired) if paired else None
            rows.append((f"{app} {wrapping}", bare.median, wrapped.median, ratio))
    return rows


def table(m: Measurement) -> str:
    lines = [
        "| app, wrapping | bare ms/GiB | wrapped ms/GiB | wrapped ÷ bare |",
        "|---|---|---|---|",
    ]
    for name, bare, wrapped, ratio in ratios(m):
        cells = [f"{v:.0f}" if v is not None else "-" for v in (bare, wrapped)]
        shown = f"{ratio:.2f}x" if ratio is not None else "-"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {shown} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.wrapping", description=__doc__)
    p.add_argument("--size", type=int, default=256, help="file size in MiB (default 256)")
    p.add_argument("--downloads", type=int, default=4, help="downloads per contender and round")
    p.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    args = p.parse_args(argv)
    data = Settings().data
    os.makedirs(data, exist_ok=True)
    m = run(data, args.size << 20, downloads=args.downloads, runs=args.runs)
    print(table(m))


if __name__ == "__main__":
    main()
