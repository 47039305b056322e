"""200 slow readers against the default deployment (``gunicorn -c gunicorn.conf.py``).

Under plain gthread (2 workers x 8 threads) 16 clients reading ``big.bin`` at
about 4 KB/s take every thread, and a new client's request for a tiny file
waits for ever. With the offloading worker that ``gunicorn.conf.py`` selects,
every one of 200 such downloads starts, a small request is answered at once
while they run, and when the clients hang up every file is released and
every transfer logged ``aborted``.

The clients are non-blocking sockets in one selector loop with a small
receive buffer, so the test process itself stays light.
"""

from __future__ import annotations

import runpy
import selectors
import socket
import time
from contextlib import suppress
from pathlib import Path

import pytest

from wsgipipe.testing import GunicornServer, open_files, transfer_lines, wait_until

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parent.parent
CLIENTS = 200
READ = 2048  # bytes per read ...
EVERY = 0.5  # ... every half second: about 4 KB/s
SMALL = b"hello, world\n"  # the new client's 13-byte file
REQUEST = b"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class DefaultDeployment(GunicornServer):
    """gunicorn with the repository's gunicorn.conf.py and nothing else but the port."""

    OVERRIDES = ("--worker-class", "--workers", "--threads", "--timeout", "--graceful-timeout")

    def command(self) -> list[str]:
        cmd = super().command()
        for option in self.OVERRIDES:  # drop what the launcher would impose
            at = cmd.index(option)
            del cmd[at : at + 2]
        return cmd


class SlowReader:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.sent = False
        self.head = b""
        self.status: bytes | None = None
        self.due = 0.0

    def on_event(self, now: float) -> None:
        if not self.sent:
            self.sock.send(REQUEST)
            self.sent = True
        elif now >= self.due:
            self.due = now + EVERY
            data = self.sock.recv(READ)
            if self.status is None:
                self.head += data
                if b"\r\n\r\n" in self.head:
                    self.status = self.head.split(b" ", 2)[1]


def run_readers(readers: list[SlowReader], sel: selectors.BaseSelector, seconds: float) -> None:
    """Drive every reader for ``seconds``: send the request, then one read per interval."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for key, _ in sel.select(timeout=min(0.05, end - now)):
            reader: SlowReader = key.data
            with suppress(BlockingIOError):  # not due yet, or nothing to read yet
                reader.on_event(now)
            if reader.sent:
                sel.modify(reader.sock, selectors.EVENT_READ, reader)
        time.sleep(0.01)  # a reader that is not due yet stays readable


def small_request(port: int) -> tuple[float, bytes]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return time.monotonic() - started, data


def test_two_hundred_slow_readers(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_bytes(SMALL)
    workers = runpy.run_path(str(REPO / "gunicorn.conf.py"))["workers"]
    env = {"WSGIPIPE_ROOT": str(tmp_path)}
    with DefaultDeployment(
        "examples.app:app", workers=workers, cwd=REPO, env=env, config="gunicorn.conf.py"
    ) as server:
        assert "Using worker: wsgipipe.gunicorn.OffloadWorker" in server.log
        sel = selectors.DefaultSelector()
        readers = [SlowReader(server.port) for _ in range(CLIENTS)]
        for reader in readers:
            sel.register(reader.sock, selectors.EVENT_WRITE, reader)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(r.status is None for r in readers):
                run_readers(readers, sel, EVERY)
            started = [r.status for r in readers]
            assert started == [b"200"] * CLIENTS, f"{started.count(b'200')} of {CLIENTS} started"
            for _ in range(3):  # a new client, while all 200 are still reading
                seconds, answer = small_request(server.port)
                assert answer.endswith(b"\r\n\r\n" + SMALL), answer
                assert seconds < 0.5, f"small request took {seconds:.2f}s"
                run_readers(readers, sel, EVERY)
        finally:
            for reader in readers:
                reader.sock.close()
            sel.close()
        assert wait_until(lambda: server.open_files(tmp_path) == [], 10, 0.05), server.open_files(
            tmp_path
        )
        assert wait_until(lambda: len(transfer_lines(server.log, "/big.bin")) >= CLIENTS, 10)
        ended = transfer_lines(server.log, "/big.bin")
        assert len(ended) == CLIENTS
        assert all(" 200 aborted " in line and "via=offload" in line for line in ended), ended[:3]
        assert all(open_files(pid, tmp_path) == [] for pid in server.worker_pids())
