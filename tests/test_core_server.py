"""The core under a real gunicorn: every ending releases the file, zero-copy is kept.

Server-side truth only: descriptors from /proc/<worker>/fd, outcomes from the
transfer lines gunicorn's workers log.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgipipe.testing import (
    GunicornServer,
    TraceUnavailable,
    raw_request,
    trace_syscalls,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

pytestmark = pytest.mark.server

APPS = Path(__file__).with_name("apps")
SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-root")
    block = os.urandom(1 << 20)
    with (root / "big.bin").open("wb") as f:
        for _ in range(SIZE // len(block)):
            f.write(block)
    (root / "small.txt").write_bytes(b"hello\n")
    return root


@pytest.fixture(scope="module", params=["sync", "gthread"])
def server(request: pytest.FixtureRequest, root: Path) -> Iterator[GunicornServer]:
    with GunicornServer(
        "core_app:app",
        worker_class=request.param,
        cwd=APPS,
        env={"WSGIPIPE_TEST_ROOT": str(root)},
        config=str(Path(__file__).parents[1] / "gunicorn.conf.py"),
    ) as server:
        yield server


def count(server: GunicornServer, path: str) -> int:
    return len(transfer_lines(server.log, path))


def held(server: GunicornServer, root: Path) -> list[str]:
    return [p for p in server.open_files(root) if p.endswith("big.bin")]


def curl(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-s", "--max-time", "30", *args, url], capture_output=True)


def test_full_download_is_zero_copy_and_finished(server: GunicornServer, root: Path) -> None:
    before = count(server, "/file/big.bin")
    result = curl(f"{server.url}/file/big.bin")
    assert result.stdout == (root / "big.bin").read_bytes()
    line = wait_for_transfer(server, "/file/big.bin", count=before + 1, timeout=10)
    assert f" 200 finished {SIZE}/{SIZE} B " in line
    assert "via=sendfile" in line, "no tee, regular file: gunicorn's sendfile path"
    assert wait_until(lambda: not held(server, root), 1)


def test_tee_falls_back_to_python_with_the_same_bytes(server: GunicornServer, root: Path) -> None:
    before = count(server, "/tee/big.bin")
    result = curl(f"{server.url}/tee/big.bin")
    body = result.stdout
    assert body == (root / "big.bin").read_bytes()
    line = wait_for_transfer(server, "/tee/big.bin", count=before + 1, timeout=10)
    assert "via=python" in line
    assert f"sha256={hashlib.sha256(body).hexdigest()}" in line


@pytest.mark.parametrize("path", ["/bytesio", "/pipe", "/proc"])
def test_unsendfileable_sources_are_read_in_python(server: GunicornServer, path: str) -> None:
    before = count(server, path)
    result = curl(f"{server.url}{path}", "-w", "%{http_code}")
    assert result.stdout.endswith(b"200") and len(result.stdout) > 3
    line = wait_for_transfer(server, path, count=before + 1, timeout=10)
    assert " finished " in line and "via=python" in line


@pytest.mark.parametrize("route", ["/file/big.bin", "/tee/big.bin"])
def test_curl_killed_mid_download_releases_the_file(
    server: GunicornServer, root: Path, route: str
) -> None:
    before = count(server, route)
    client = subprocess.Popen(
        ["curl", "-s", "--limit-rate", "200k", "-o", os.devnull, f"{server.url}{route}"]
    )
    try:
        assert wait_until(lambda: held(server, root), 5), "the download should be in progress"
        time.sleep(0.3)
    finally:
        client.kill()
        client.wait()
    killed = time.monotonic()
    assert wait_until(lambda: not held(server, root), 1.0), "descriptor still open after 1 s"
    released_after = time.monotonic() - killed
    line = wait_for_transfer(server, route, count=before + 1, timeout=10)
    assert " 200 aborted " in line, line
    assert released_after < 1.0
    assert curl(f"{server.url}/file/small.txt").stdout == b"hello\n", "next request served"


def test_raw_socket_closed_after_first_bytes(server: GunicornServer, root: Path) -> None:
    before = count(server, "/file/big.bin")
    sock = raw_request(server, "/file/big.bin")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    assert wait_until(lambda: not held(server, root), 1.0)
    line = wait_for_transfer(server, "/file/big.bin", count=before + 1, timeout=10)
    sent = int(re.search(r" aborted (\d+)/", line).group(1))  # type: ignore[union-attr]
    assert 0 <= sent < SIZE


def test_missing_file_is_404_and_the_worker_lives(server: GunicornServer) -> None:
    workers = server.worker_pids()
    result = curl(f"{server.url}/file/nope.bin", "-w", " %{http_code}")
    assert result.stdout == b"404 Not Found\n 404"
    assert curl(f"{server.url}/file/small.txt").stdout == b"hello\n"
    assert server.worker_pids() == workers


def count_syscalls(server: GunicornServer, url: str, tmp_path: Path) -> dict[str, int]:
    """Run one download while strace watches the worker; count its send syscalls."""
    [pid] = server.worker_pids()
    try:
        with trace_syscalls(pid, ["sendfile", "sendto", "write"], tmp_path / "strace.out") as out:
            assert curl(url).returncode == 0
    except TraceUnavailable as exc:
        pytest.skip(str(exc))
    text = out.read_text()
    return {name: len(re.findall(rf"\b{name}\(", text)) for name in ("sendfile", "sendto", "write")}


def test_syscalls_prove_zero_copy_and_its_fallback(server: GunicornServer, tmp_path: Path) -> None:
    """An independent witness for via=sendfile: the kernel calls themselves."""
    zero_copy = count_syscalls(server, f"{server.url}/file/big.bin", tmp_path)
    teed = count_syscalls(server, f"{server.url}/tee/big.bin", tmp_path)
    assert zero_copy["sendfile"] >= 1
    assert zero_copy["sendto"] + zero_copy["write"] < 10, "only the headers are written"
    assert teed["sendfile"] == 0
    assert teed["sendto"] + teed["write"] >= SIZE // (64 * 1024), "one write per 64 KiB chunk"
