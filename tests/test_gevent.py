"""wsgipipe under gunicorn's gevent worker (``-k gevent``): the alternative to threads.

Under gevent every connection is a greenlet, so slow readers cost no thread:
a crowd of them leaves a new client's small request fast, where gthread's
8 threads would be taken by the first 8. wsgipipe's idle timeout and minimum
rate work there too: the watchdog is a greenlet once gevent has patched
``threading`` and ``time``, and it cuts the connection without gunicorn
logging an error. The same four readers as tests/test_min_rate_server.py run
here, next to a stalled reader and the crowd, all started together.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from slow_clients import (
    CLIENTS,
    FLOOR,
    GRACE,
    RCVBUF,
    WATCH,
    Run,
    make_files,
    paced_server,
    seconds_of,
    slow_get,
)

from wsgipipe.testing import transfer_lines, wait_for_transfer, wait_until

pytestmark = pytest.mark.server

CROWD = 100  # slow readers held open at once (gthread with 8 threads serves 8)
TINY = b"hello, world\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    pytest.importorskip("gevent")
    root = tmp_path_factory.mktemp("gevent")
    make_files(root, [*CLIENTS, "stalled", "crowd"])
    (root / "tiny.txt").write_bytes(TINY)
    with (
        paced_server(root, "gevent", workers=1, args=["--worker-connections", "1000"]) as server,
        ThreadPoolExecutor(len(CLIENTS) + 1) as pool,
    ):
        assert "Using worker: gevent" in server.log
        started = Run(server, root, pool)
        # Reads the head, then nothing: only /idle/'s own 1 s idle timeout can cut it.
        started.readings["stalled"] = pool.submit(
            slow_get, server.port, "/idle/stalled.bin", bite=1024, pause=WATCH, seconds=WATCH
        )
        yield started
        assert "[ERROR]" not in server.log, server.log[-3000:]
        assert "Traceback" not in server.log, server.log[-3000:]


def test_min_rate_cuts_a_slow_reader_under_gevent(run: Run) -> None:
    for name in ("slow", "python"):
        line = run.line(name, timeout=GRACE + 8)
        assert " 200 aborted " in line
        assert "reason='min rate'" in line
        assert GRACE <= seconds_of(line) < GRACE + 4, line
        assert wait_until(lambda name=name: not run.held(name), 2.0)


def test_readers_above_the_floor_or_with_their_own_pace_are_not_cut(run: Run) -> None:
    for name in ("above", "override"):
        reading = run.readings[name].result(WATCH + 15)
        assert (reading.status, reading.ended_by_server) == (200, False), name
        line = run.line(name)
        assert " 200 aborted " in line
        assert "reason=" not in line
        assert seconds_of(line) >= WATCH - 0.5
    assert run.readings["above"].result().got >= FLOOR * WATCH


def test_idle_timeout_cuts_a_stalled_reader_under_gevent(run: Run) -> None:
    line = wait_for_transfer(run.server, "/idle/stalled.bin", timeout=6)
    assert " 200 aborted " in line
    assert "reason='idle timeout 1s'" in line
    assert 1.0 <= seconds_of(line) < 2.5, line
    assert wait_until(lambda: not run.held("stalled"), 2.0)


def test_a_crowd_of_slow_readers_leaves_a_small_request_fast(run: Run) -> None:
    crowd = [_start_download(run.server.port, "/override/crowd.bin") for _ in range(CROWD)]
    try:
        # Every download started: each got its status line.
        assert all(sock.recv(1024).startswith(b"HTTP/1.1 200 ") for sock in crowd)
        latencies = [_small_request(run.server.port) for _ in range(5)]
        assert max(latencies) < 0.5, latencies
    finally:
        for sock in crowd:
            sock.close()
    path = "/override/crowd.bin"
    assert wait_until(lambda: len(transfer_lines(run.server.log, path)) == CROWD, 10)
    assert all(" 200 aborted " in line for line in transfer_lines(run.server.log, path))
    assert wait_until(lambda: not run.held("crowd"), 5.0)


def _start_download(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    except BaseException:
        sock.close()
        raise
    return sock


def _small_request(port: int) -> float:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/file/tiny.txt")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, TINY)
    finally:
        conn.close()
    return time.monotonic() - started
