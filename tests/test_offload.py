"""The offloading worker under a real gunicorn: what is offloaded, and what still holds.

Every test asserts the server's side: the transfer line (outcome, exact
bytes, ``via=offload`` or not), the file gone from ``/proc/<worker>/fd``,
and the worker still answering. "Offloaded" is also shown by behaviour: a
worker with two threads keeps answering while more stalled downloads than
it has threads are in flight.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import server_checks

from examples.clients._http import read_head
from wsgipipe.gunicorn import WORKER_CLASS
from wsgipipe.testing import GunicornServer, transfer_lines, wait_for_transfer, wait_until

pytestmark = pytest.mark.server

BIG = 64 * 1024 * 1024  # examples/app.py's big.bin
INDEX = b"<!doctype html><title>offload</title>\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("public")
    (path / "index.html").write_bytes(INDEX)
    return path


def example_server(root: Path, **options: object) -> GunicornServer:
    """The example app on the offloading worker, two threads unless told."""
    options.setdefault("threads", 2)
    return server_checks.example_server(root, WORKER_CLASS, idle=1, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[GunicornServer]:
    with example_server(root) as server:
        assert f"Using worker: {WORKER_CLASS}" in server.log
        first = server.worker_pids()
        yield server
        assert server.worker_pids() == first, "no worker was restarted"
        assert "Traceback" not in server.log, server.log[-3000:]


def request(port: int, path: str, *headers: str, close: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(raw(path, *headers, close=close))
    return sock


def raw(path: str, *headers: str, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(
    sock: socket.socket, buffered: bytes = b""
) -> tuple[int, dict[str, str], bytes, bytes]:
    """Status, headers, body (exactly Content-Length) and the bytes after it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before the head"
        data += chunk
    head, data = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(data) < length:
        chunk = sock.recv(4 * 1024 * 1024)
        assert chunk, f"closed after {len(data)} of {length} body bytes"
        data += chunk
    return int(lines[0].split()[1]), headers, data[:length], data[length:]


def released(server: GunicornServer, root: Path, within: float) -> bool:
    return wait_until(lambda: server.open_files(root) == [], within, 0.005)


def count(server: GunicornServer, path: str) -> int:
    return len(transfer_lines(server.log, path))


def stall(server: GunicornServer, path: str = "/big.bin", *, close: bool = False) -> socket.socket:
    """A client that reads the head of ``path`` and then nothing."""
    sock = request(server.port, path, close=close)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert read_head(sock).status == 200
    return sock


class TestOffloaded:
    def test_download_exact_and_logged(self, server: GunicornServer, root: Path) -> None:
        before = count(server, "/big.bin")
        with request(server.port, "/big.bin", close=True) as sock:
            status, _, body, _ = read_response(sock)
        assert status == 200 and len(body) == BIG
        assert (
            hashlib.sha256(body).digest()
            == hashlib.sha256((root / "big.bin").read_bytes()).digest()
        )
        line = wait_for_transfer(server, "/big.bin", count=before + 1)
        assert f" 200 finished {BIG}/{BIG} B" in line and "via=offload" in line, line
        assert f'"GET /big.bin HTTP/1.1" 200 {BIG} ' in server.log
        assert released(server, root, 1)

    def test_single_range(self, server: GunicornServer, root: Path) -> None:
        before = count(server, "/big.bin")
        with request(server.port, "/big.bin", "Range: bytes=1000-2000999", close=True) as sock:
            status, headers, body, _ = read_response(sock)
        assert status == 206 and headers["content-range"] == f"bytes 1000-2000999/{BIG}"
        with open(root / "big.bin", "rb") as f:
            f.seek(1000)
            assert body == f.read(2_000_000)
        line = wait_for_transfer(server, "/big.bin", count=before + 1)
        assert " 206 finished 2000000/2000000 B" in line and "via=offload" in line, line

    def test_keep_alive_and_pipelined_after_offload(
        self, server: GunicornServer, root: Path
    ) -> None:
        ranged = raw("/big.bin", "Range: bytes=0-4194303")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            # Three requests in one write: the second and third wait in the
            # socket (or gunicorn's buffer) while the first is offloaded.
            sock.sendall(ranged + raw("/index.html") + ranged)
            status, _, body, rest = read_response(sock)
            assert status == 206 and len(body) == 4 * 1024 * 1024
            status, _, body, rest = read_response(sock, rest)
            assert (status, body) == (200, INDEX)
            status, _, body, rest = read_response(sock, rest)
            assert status == 206 and len(body) == 4 * 1024 * 1024
            sock.sendall(raw("/index.html", close=True))  # and the connection is still usable
            status, headers, body, rest = read_response(sock, rest)
            assert (status, body, headers["connection"]) == (200, INDEX, "close")
        assert released(server, root, 1)

    def test_abort_releases_the_file_at_once(self, server: GunicornServer, root: Path) -> None:
        before = count(server, "/big.bin")
        sock = stall(server)
        assert server.open_files(root), "the download is in flight"
        # Closing with bytes unread sends RST, as a cancelled download does.
        # (A client that read everything sends FIN instead, and the kernel
        # reports it gone when it refuses the next segment, ~200 ms later.)
        time.sleep(0.1)
        sock.close()
        closed = time.monotonic()
        assert released(server, root, 1)
        took = time.monotonic() - closed
        line = wait_for_transfer(server, "/big.bin", count=before + 1)
        assert " 200 aborted " in line and "via=offload" in line, line
        assert took < 0.1, f"file released {took * 1000:.0f} ms after the client left"

    def test_stalled_reader_cut_by_the_idle_timeout(
        self, server: GunicornServer, root: Path
    ) -> None:
        before = count(server, "/big.bin")
        with stall(server):
            line = wait_for_transfer(server, "/big.bin", count=before + 1, timeout=10)
            assert released(server, root, 0.5)
        assert " 200 aborted " in line and "reason='idle timeout 1s'" in line, line
        assert "via=offload" in line

    def test_stalled_readers_hold_no_thread(self, server: GunicornServer, root: Path) -> None:
        stalled = [stall(server) for _ in range(6)]  # three times the threads
        try:
            started = time.monotonic()
            with request(server.port, "/index.html", close=True) as sock:
                assert read_response(sock)[2] == INDEX
            assert time.monotonic() - started < 0.5
        finally:
            for sock in stalled:
                sock.close()
        assert released(server, root, 1)


class TestFallsBack:
    """Bodies Python must touch take gthread's own path, and still work."""

    @pytest.mark.parametrize(
        ("path", "via"),
        [("/limit/index.html?rate=100k", "python"), ("/slow/big.bin?delay=0", "python")],
    )
    def test_through_bodies(self, server: GunicornServer, path: str, via: str) -> None:
        logged = path.split("?")[0]
        before = count(server, logged)
        with request(server.port, path, close=True) as sock:
            status, _, body, _ = read_response(sock)
        assert status == 200 and body
        line = wait_for_transfer(server, logged, count=before + 1)
        assert " 200 finished " in line and f"via={via}" in line, line

    def test_no_sendfile_setting(self, root: Path) -> None:
        with example_server(root, args=["--no-sendfile"]) as server:
            with request(server.port, "/big.bin", "Range: bytes=0-1048575", close=True) as sock:
                status, _, body, _ = read_response(sock)
            line = wait_for_transfer(server, "/big.bin")
        assert status == 206 and len(body) == 1 << 20
        assert " 206 finished 1048576/1048576 B" in line and "via=python" in line, line

    def test_tee(self, root: Path) -> None:
        with example_server(root, env={"WSGIPIPE_TEE": "sha256"}) as server:
            with request(server.port, "/big.bin", close=True) as sock:
                status, _, body, _ = read_response(sock)
            digest = hashlib.sha256(body).hexdigest()
            line = wait_for_transfer(server, "/big.bin")
        assert status == 200 and len(body) == BIG
        assert f" 200 finished {BIG}/{BIG} B" in line and "via=python" in line, line
        assert f"sha256={digest}" in line


def test_too_slow_reader_cut_by_the_min_rate(root: Path) -> None:
    """The minimum data rate holds for offloaded transfers too (the watchdog sees the socket)."""
    env = {"WSGIPIPE_IDLE_TIMEOUT": "0", "WSGIPIPE_MIN_RATE": "100k"}  # grace: 5 s
    with example_server(root, env=env) as server:
        sock = stall(server)
        started = time.monotonic()
        ended: list[float] = []

        def read_slowly() -> None:  # about 4 KB/s, far below 100 KB/s
            sock.settimeout(3)  # a loaded machine may refill the buffer late: only a cut ends this
            with suppress(OSError), sock:
                while time.monotonic() - started < 15 and sock.recv(2048):
                    time.sleep(0.5)
            ended.append(time.monotonic() - started)

        reader = threading.Thread(target=read_slowly)
        reader.start()
        line = wait_for_transfer(server, "/big.bin", timeout=12)
        took = time.monotonic() - started
        assert released(server, root, 1)
        reader.join(16)
    assert " 200 aborted " in line and "reason='min rate'" in line and "via=offload" in line, line
    assert 4 < took < 8, f"cut after {took:.1f}s (grace 5 s)"
    # RST: the client reads what its small buffer holds (a few seconds at this
    # pace), then the reset, instead of being fed megabytes still queued.
    assert ended and ended[0] < took + 5, "the client is cut, not fed the queue"


def test_file_shrunk_mid_transfer_closes_the_connection(root: Path) -> None:
    """sendfile reaching a new end of file never leaves a short body on a kept-alive connection."""
    path = root / "shrink.bin"
    path.write_bytes(b"s" * (32 << 20))
    with example_server(root) as server, request(server.port, "/shrink.bin") as sock:
        head = read_head(sock)
        assert head.status == 200 and head.length == 32 << 20
        os.truncate(path, 8 << 20)
        got = len(head.rest)
        with suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        line = wait_for_transfer(server, "/shrink.bin")
        assert released(server, root, 1)
    assert got < 32 << 20, "the client sees a cut, not a short body followed by more"
    assert " 200 failed " in line and "FileChanged" in line and "via=offload" in line, line


def test_many_concurrent_transfers_are_exact(server: GunicornServer, root: Path) -> None:
    """Forty downloads at once, read at different paces: every byte right, every line exact."""
    size = 2 << 20
    with open(root / "big.bin", "rb") as f:
        expected = [hashlib.sha256(f.read(size)).digest()]
        f.seek(size)
        expected.append(hashlib.sha256(f.read(size)).digest())
    before = count(server, "/big.bin")
    results: list[bool] = []

    def fetch(i: int) -> None:
        start = (i % 2) * size
        header = f"Range: bytes={start}-{start + size - 1}"
        with request(server.port, "/big.bin", header, close=True) as sock:
            sock.settimeout(20)
            status, _, body, _ = read_response(sock) if i % 4 else slow_read(sock)
        results.append(status == 206 and hashlib.sha256(body).digest() == expected[i % 2])

    clients = [threading.Thread(target=fetch, args=(i,)) for i in range(40)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert results == [True] * 40
    assert wait_until(lambda: count(server, "/big.bin") >= before + 40, 10)
    lines = transfer_lines(server.log, "/big.bin")[before:]
    assert all(f" 206 finished {size}/{size} B" in x and "via=offload" in x for x in lines), lines
    assert released(server, root, 1)


def slow_read(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bytes]:
    """read_response in small bites, so that the server sees many full sockets."""
    data = b""
    while len(data) < (2 << 20) + 4096 and (chunk := sock.recv(16384)):
        data += chunk
        time.sleep(0.0005)
    return read_response(sock, data)
