"""The servers the harness starts, and what it reads about them from /proc.

gunicorn comes from :class:`wsgipipe.testing.GunicornServer`, nginx (the
ceiling) from the launcher the tests use too (Debian's package with a config
of our own). Everything listens on 127.0.0.1 and is stopped by its context
manager.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wsgipipe.testing import GunicornServer
from wsgipipe.testing._matrix import Nginx, nginx_binary

__all__ = ["Nginx", "cpu_seconds", "gunicorn", "nginx_binary", "reset_peak_rss", "rss_kib", "tree"]

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def gunicorn(app: str, data: str, **options: Any) -> GunicornServer:
    """A gunicorn running ``bench.apps:build(app)`` over ``data`` (not started)."""
    env = {
        "WSGIPIPE_TEST_ROOT": data,
        "BENCH_TRANSFER_LOG": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return GunicornServer(f"bench.apps:build({app!r})", env=env, cwd=REPO, **options)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in text.split()]


def tree(pid: int) -> list[int]:
    """``pid`` and its children (a master and its workers)."""
    return [pid, *children(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = text.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return total / _TICKS


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (proc(5): writing 5 to clear_refs); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
