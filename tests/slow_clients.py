"""Slow HTTP/1.1 readers for the pace tests, and the server they read from.

The readers have a small receive buffer and take a few bytes at a time.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wsgipipe.testing import GunicornServer, wait_for_transfer

#: Receive buffer of the slow clients: the kernel doubles it, so about 4 KiB
#: can wait on the client's side; the rest of a large file waits on the server's.
RCVBUF = 2048


@dataclass
class Reading:
    """What one slow client saw."""

    status: int | None = None
    got: int = 0  # bytes of the response, head included
    ended_by_server: bool = False


def slow_get(
    port: int, path: str, *, bite: int, pause: float, seconds: float, rcvbuf: int = RCVBUF
) -> Reading:
    """GET ``path``; read ``bite`` bytes every ``pause`` s for ``seconds``, then hang up."""
    reading = Reading()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = sock.recv(bite)
            except OSError:  # reset, or nothing at all for 10 s
                data = b""
            if not data:
                reading.ended_by_server = True
                break
            if reading.status is None:
                reading.status = int(data.split(b" ", 2)[1])
            reading.got += len(data)
            time.sleep(pause)
    return reading


# -- the pace tests' server and the readers started together against it -------

APPS = Path(__file__).resolve().parent / "apps"
SIZE = 8 * 1024 * 1024  # far more than both socket buffers hold
FLOOR = 4096  # bytes/s, after GRACE seconds
GRACE = 1.0
WATCH = 5.0  # seconds the readers that must not be cut keep reading

#: name -> (path, bite, pause): 25 B every 0.5 s is 50 B/s; 4 KiB every 0.25 s is 16 KiB/s
#: (4x the floor: a reader starved of CPU on a busy machine is still well above it).
CLIENTS = {
    "slow": ("/file/slow.bin", 25, 0.5),
    "python": ("/python/python.bin", 25, 0.5),
    "above": ("/file/above.bin", 4096, 0.25),
    "override": ("/override/override.bin", 25, 0.5),
}


def paced_server(root: Path, worker_class: str, **options: object) -> GunicornServer:
    """tests/apps/paced_app.py: a floor of FLOOR after GRACE, idle timeout 30 s."""
    env = {
        "WSGIPIPE_TEST_ROOT": str(root),
        "PACED_MIN_RATE": str(FLOOR),
        "PACED_GRACE": str(GRACE),
        "PACED_IDLE_TIMEOUT": "30",
    }
    return GunicornServer(
        "paced_app:app",
        worker_class=worker_class,
        cwd=APPS,
        env=env,
        config=str(APPS.parent.parent / "gunicorn.conf.py"),  # its logging shows transfer lines
        **options,  # type: ignore[arg-type]
    )


def make_files(root: Path, names: Iterable[str], size: int = SIZE) -> None:
    """Sparse files ``<name>.bin`` (instant to make, read as zeros)."""
    for name in names:
        with open(root / f"{name}.bin", "wb") as f:
            f.truncate(size)


class Run:
    """A server and the CLIENTS reading from it, all started at once."""

    def __init__(self, server: GunicornServer, root: Path, pool: ThreadPoolExecutor) -> None:
        self.server, self.root = server, root
        self.readings: dict[str, Future[Reading]] = {}
        for name, (path, bite, pause) in CLIENTS.items():
            self.readings[name] = pool.submit(
                slow_get, server.port, path, bite=bite, pause=pause, seconds=WATCH
            )

    def held(self, name: str) -> bool:
        return any(path.endswith(f"/{name}.bin") for path in self.server.open_files(self.root))

    def line(self, name: str, timeout: float = 10.0) -> str:
        return wait_for_transfer(self.server, CLIENTS[name][0], timeout=timeout)


def seconds_of(line: str) -> float:
    """The duration on a transfer line (``... 1.50s ...``)."""
    match = re.search(r" (\d+(?:\.\d+)?)s\b", line)
    assert match, line
    return float(match.group(1))
