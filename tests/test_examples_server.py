"""The classic client experiments against the example app under a real gunicorn.

Each test asserts the server's side of the story: the file's descriptor is
gone from ``/proc/<worker>/fd`` within the bound, the transfer line says how
the response ended, the server answers the next request, and no worker was
restarted (except the sync-worker kill that one test pins down on purpose).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import server_checks

from examples.clients import control, large_abort, limit_rate, one_chunk, slow_open, slow_reader
from examples.clients._http import connect, read_head
from wsgipipe.testing import GunicornServer, transfer_lines, wait_for_transfer, wait_until

pytestmark = pytest.mark.server

IDLE = 1  # seconds: WSGIPIPE_IDLE_TIMEOUT for these servers
SIXTY = 610  # bytes served at 10 B/s: the last byte leaves after about 61 s


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("public")
    (path / "index.html").write_bytes(b"<!doctype html><title>wsgipipe</title>\n")
    (path / "sixty.txt").write_bytes(b"x" * (SIXTY - 1) + b"\n")
    (path / "empty-dir").mkdir()
    return path


def example_server(root: Path, worker_class: str, **options: object) -> GunicornServer:
    return server_checks.example_server(root, worker_class, idle=IDLE, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gthread(root: Path) -> Iterator[GunicornServer]:
    with example_server(root, "gthread", workers=1, threads=8, timeout=10) as server:
        assert "Using worker: gthread" in server.log
        server.first_pids = server.worker_pids()  # type: ignore[attr-defined]
        server.sixty = start_sixty_second_download(server)  # type: ignore[attr-defined]
        yield server
        assert "WORKER TIMEOUT" not in server.log
        assert server.worker_pids() == server.first_pids  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sync(root: Path) -> Iterator[GunicornServer]:
    # threads=1: with more, gunicorn silently runs gthread instead of sync.
    with example_server(root, "sync", workers=2, threads=1, timeout=10) as server:
        assert "Using worker: sync" in server.log
        server.first_pids = server.worker_pids()  # type: ignore[attr-defined]
        yield server
        assert "WORKER TIMEOUT" not in server.log
        assert sorted(server.worker_pids()) == sorted(server.first_pids)  # type: ignore[attr-defined]


@pytest.fixture(params=["gthread", "sync"])
def server(request: pytest.FixtureRequest) -> GunicornServer:
    found: GunicornServer = request.getfixturevalue(request.param)
    return found


def start_sixty_second_download(server: GunicornServer) -> dict[str, object]:
    """Runs in the background from the start, while the other tests do."""
    outcome: dict[str, object] = {}

    def fetch() -> None:
        started = time.monotonic()
        try:
            url = f"{server.url}/limit/sixty.txt?rate=10"
            with urllib.request.urlopen(url, timeout=90) as response:
                outcome["body"] = response.read()
        except Exception as exc:  # reported by the test that joins this thread
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def lines(server: GunicornServer, path: str) -> int:
    return len(transfer_lines(server.log, path))


def released(server: GunicornServer, root: Path, within: float) -> bool:
    return wait_until(lambda: server.open_files(root) == [], within, 0.005)


def assert_serves(server: GunicornServer, root: Path) -> None:
    with urllib.request.urlopen(f"{server.url}/index.html", timeout=10) as response:
        assert response.read() == (root / "index.html").read_bytes()


def test_control_download(server: GunicornServer, root: Path, tmp_path: Path) -> None:
    before = lines(server, "/big.bin")
    result = control.run(f"{server.url}/big.bin", tmp_path / "big.bin", compare=root / "big.bin")
    assert result.status == 200 and result.same is True
    line = wait_for_transfer(server, "/big.bin", count=before + 1)
    assert f" 200 finished {result.size}/{result.size} B" in line
    assert "via=sendfile" in line, "zero-copy survives TransferLog and IdleTimeout"
    assert released(server, root, 1)


def test_one_chunk_then_abort(server: GunicornServer, root: Path) -> None:
    before = lines(server, "/big.html")
    got = one_chunk.run(f"{server.url}/big.html")
    assert 0 < got <= 65536
    assert released(server, root, 1)
    line = wait_for_transfer(server, "/big.html", count=before + 1)
    assert " 200 aborted " in line and "idle timeout" not in line
    assert_serves(server, root)


def test_large_abort(server: GunicornServer, root: Path) -> None:
    before = lines(server, "/big.bin")
    got = large_abort.run(f"{server.url}/big.bin", after=8 * 1024 * 1024)
    assert got == 8 * 1024 * 1024
    assert released(server, root, 1)
    line = wait_for_transfer(server, "/big.bin", count=before + 1)
    assert " 200 aborted " in line
    assert_serves(server, root)


def test_stalled_reader_is_cut_off_by_the_idle_timeout(server: GunicornServer, root: Path) -> None:
    before = lines(server, "/big.bin")
    with connect(f"{server.url}/big.bin", rcvbuf=64 * 1024):
        assert wait_until(lambda: server.open_files(root) != [], 5, 0.005)
        opened = time.monotonic()
        # Meanwhile other transfers are served as usual (on the same worker
        # under gthread, by the other worker under sync).
        assert_serves(server, root)
        assert released(server, root, IDLE + 1.0), "held past idle_timeout + 1 s"
        cut_after = time.monotonic() - opened
    assert IDLE - 0.2 <= cut_after <= IDLE + 1.0
    line = wait_for_transfer(server, "/big.bin", count=before + 1)
    assert " 200 aborted " in line and f"reason='idle timeout {IDLE}s'" in line
    assert_serves(server, root)


def test_slow_reader_is_not_cut_off(server: GunicornServer, root: Path) -> None:
    before = lines(server, "/big.bin")
    result = slow_reader.run(f"{server.url}/big.bin", seconds=2.5, pause=0.2)
    assert result.status == 200 and not result.cut
    assert result.got > 12 * 65536, "it kept reading for 2.5 s"
    line = wait_for_transfer(server, "/big.bin", count=before + 1)
    assert " 200 aborted " in line and "idle timeout" not in line
    assert released(server, root, 1)


def test_abort_during_a_five_second_delay_is_released_at_once(
    server: GunicornServer, root: Path
) -> None:
    before = lines(server, "/slow/big.bin")
    with connect(f"{server.url}/slow/big.bin?delay=5"):
        assert wait_until(lambda: server.open_files(root) != [], 5, 0.005)
        time.sleep(0.3)  # the body is now waiting out its first delay
    closed = time.monotonic()
    assert released(server, root, 0.5), "still open 0.5 s after the client left"
    took = time.monotonic() - closed
    line = wait_for_transfer(server, "/slow/big.bin", count=before + 1)
    assert "aborted" in line and "reason='client disconnected'" in line
    assert "ClientGone" not in server.log, "a client that left is no server error"
    assert took < 0.5
    assert_serves(server, root)


def test_slow_open(gthread: GunicornServer, root: Path) -> None:
    results: list[tuple[int, bytes]] = []
    opener = threading.Thread(
        target=lambda: results.append(slow_open.run(f"{gthread.url}/index.html", pause=1.5))
    )
    opener.start()
    time.sleep(0.3)
    assert_serves(gthread, root)  # the half-open request does not block others
    opener.join(10)
    assert results == [(200, (root / "index.html").read_bytes())]


def test_errors_answer_cleanly_and_the_server_keeps_running(
    server: GunicornServer, root: Path
) -> None:
    for path, status in [
        ("/missing.html", 404),
        ("/empty-dir/", 404),
        ("/../etc/passwd", 404),
        ("/slow/index.html?delay=nope", 400),
        ("/limit/index.html?rate=0", 400),
    ]:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + path, timeout=10)
        body = info.value.read()
        info.value.close()
        assert info.value.code == status, path
        assert b"Traceback" not in body and str(root).encode() not in body
    assert_serves(server, root)


def test_two_hundred_aborted_downloads_leave_the_fd_count_flat(
    gthread: GunicornServer, root: Path
) -> None:
    (pid,) = gthread.worker_pids()
    assert_serves(gthread, root)
    baseline = gthread.fd_counts()[pid]
    before = lines(gthread, "/big.bin")
    for _ in range(200):
        with connect(f"{gthread.url}/big.bin") as sock:
            read_head(sock)
    wait_for_transfer(gthread, "/big.bin", count=before + 200, timeout=20)
    assert released(gthread, root, 2)
    assert wait_until(lambda: gthread.fd_counts()[pid] <= baseline, 5), (
        f"{gthread.fd_counts()[pid]} descriptors, {baseline} before"
    )
    aborted = [
        line for line in transfer_lines(gthread.log, "/big.bin")[before:] if "aborted" in line
    ]
    assert len(aborted) == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_limit_rate_then_ctrl_c(gthread: GunicornServer, root: Path) -> None:
    before = lines(gthread, "/limit/big.html")
    saved = limit_rate.run(f"{gthread.url}/limit/big.html?rate=4k", seconds=1.5)
    assert 0 < saved < 64 * 1024, "both sides limit the rate"
    assert released(gthread, root, 0.5)
    line = wait_for_transfer(gthread, "/limit/big.html", count=before + 1)
    assert " 200 aborted " in line and "rate=4096B/s" in line
    assert_serves(gthread, root)


def test_sync_worker_is_killed_by_the_arbiter_during_a_long_download(root: Path) -> None:
    """Pinned down on purpose: sync only heartbeats between requests (docs/decisions.md)."""
    with example_server(root, "sync", workers=1, threads=1, timeout=2) as server:
        assert "Using worker: sync" in server.log
        (first,) = server.worker_pids()
        with connect(f"{server.url}/limit/big.html?rate=64k") as sock:
            head = read_head(sock)
            got = len(head.rest)
            sock.settimeout(10)
            while data := sock.recv(65536):
                got += len(data)
        assert head.status == 200 and got < int(head.headers["content-length"])
        assert server.wait_for_log("WORKER TIMEOUT", 5)
        assert wait_until(lambda: server.worker_pids() not in ([], [first]), 10)
        assert_serves(server, root)


def test_sixty_second_throttled_download_completes_on_gthread(
    gthread: GunicornServer, root: Path
) -> None:
    """--timeout 10, a 61 s download: gthread keeps heartbeating while it streams."""
    sixty_second_download: dict[str, object] = gthread.sixty  # type: ignore[attr-defined]
    thread = sixty_second_download["thread"]
    assert isinstance(thread, threading.Thread)
    thread.join(100)
    assert "error" not in sixty_second_download, sixty_second_download.get("error")
    body = sixty_second_download["body"]
    assert isinstance(body, bytes)
    assert (
        hashlib.sha256(body).digest() == hashlib.sha256((root / "sixty.txt").read_bytes()).digest()
    )
    assert float(sixty_second_download["seconds"]) >= 60  # type: ignore[arg-type]
    line = wait_for_transfer(gthread, "/limit/sixty.txt")
    assert f" 200 finished {SIXTY}/{SIXTY} B" in line
