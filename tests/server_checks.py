"""Requests and checks against a real gunicorn shared by several suites: what a framework
integration must do (the Flask and Django suites pass their own server and folder of files),
and plain GETs on a fresh connection."""

from __future__ import annotations

import http.client
import re
import socket
import struct
from pathlib import Path

import pytest

from wsgipipe.testing import (
    GunicornServer,
    TraceUnavailable,
    raw_request,
    trace_syscalls,
    wait_for_transfer,
)

REPO = Path(__file__).resolve().parent.parent
BIG = "/files/big.bin"
HUGE = 64 * 1024 * 1024


def get(server: GunicornServer, path: str, headers: dict[str, str] | None = None) -> bytes:
    """The whole raw response (the server closes the connection after it)."""
    chunks = []
    with raw_request(server, path, headers={"Connection": "close", **(headers or {})}) as sock:
        sock.settimeout(10)
        while data := sock.recv(1 << 20):
            chunks.append(data)
    return b"".join(chunks)


def example_server(
    root: Path,
    worker_class: str,
    *,
    idle: int = 1,
    env: dict[str, str] | None = None,
    **options: object,
) -> GunicornServer:
    """examples/app.py serving ``root``, with the repo's gunicorn.conf.py (its logging shows
    the transfer lines) and an idle timeout of ``idle`` seconds."""
    env = {"WSGIPIPE_ROOT": str(root), "WSGIPIPE_IDLE_TIMEOUT": str(idle), **(env or {})}
    return GunicornServer(
        "examples.app:app",
        worker_class=worker_class,
        cwd=REPO,
        env=env,
        config="gunicorn.conf.py",
        **options,  # type: ignore[arg-type]
    )


def fetch(
    server: GunicornServer,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10,
) -> tuple[http.client.HTTPResponse, bytes]:
    """GET ``path`` on a connection of its own: the response and its whole body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def fetch_cut_short(server: GunicornServer, path: str) -> http.client.HTTPResponse:
    """GET ``path``: a 200 whose body stops before its framing says it ends."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()  # the client knows the body is cut: it never looks complete
        return response
    finally:
        conn.close()


def check_sendfile(server: GunicornServer, root: Path) -> None:
    """/files/big.bin leaves by sendfile(2): only the headers go through a Python write."""
    size = (root / "big.bin").stat().st_size
    trace = root.parent / "strace.txt"
    worker = server.worker_pids()[0]
    try:
        with trace_syscalls(worker, ["sendfile", "sendto"], trace):
            raw = get(server, BIG)
            line = wait_for_transfer(server, BIG)
    except TraceUnavailable as exc:
        pytest.skip(str(exc))
    assert raw.endswith((root / "big.bin").read_bytes())
    assert re.search(rf"200 finished {size}/{size} B .*via=sendfile", line), line
    calls = trace.read_text()
    assert calls.count("sendfile(") >= 1
    assert calls.count("sendto(") <= 2, calls[:2000]  # the headers, not the body
    assert server.open_files(root) == []


def check_range_zero_copy(server: GunicornServer, root: Path) -> None:
    raw = get(server, BIG, {"Range": "bytes=100000-1099999"})
    assert raw.startswith(b"HTTP/1.1 206 ")
    assert raw.endswith((root / "big.bin").read_bytes()[100000:1100000])
    line = wait_for_transfer(server, BIG)
    assert re.search(r"206 finished 1000000/1000000 B .*via=sendfile", line), line


def check_offload(app: str, cwd: Path, env: dict[str, str], root: Path) -> None:
    """The offloading worker serving ``app`` hands /files/big.bin to its offload thread."""
    size = (root / "big.bin").stat().st_size
    worker = "wsgipipe.gunicorn.OffloadWorker"
    with GunicornServer(app, worker_class=worker, cwd=cwd, env=env) as server:
        assert get(server, BIG).endswith((root / "big.bin").read_bytes())
        line = wait_for_transfer(server, BIG, timeout=10)
    assert f"200 finished {size}/{size} B" in line and "via=offload" in line, line


def check_file_errors(server: GunicornServer) -> None:
    for path, status in [("/read/missing.bin", 404), ("/forbidden", 403), ("/broken", 500)]:
        raw = get(server, path)
        assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
        assert b"Traceback" not in raw
        assert f"{status} finished" in wait_for_transfer(server, path)


def check_head_and_abort(server: GunicornServer, root: Path) -> None:
    """HEAD sends no body bytes; a client that resets mid-body is logged as aborted."""
    size = (root / "big.bin").stat().st_size
    with raw_request(server, BIG, method="HEAD") as sock:
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    line = wait_for_transfer(server, BIG, method="HEAD")
    assert f"200 finished 0/{size} B" in line
    with open(root / "huge.bin", "wb") as f:
        f.truncate(HUGE)  # sparse: more than loopback buffers hold, cheap to make
    with raw_request(server, "/files/huge.bin") as sock:
        sock.settimeout(10)
        sock.recv(65536)
        # RST on close: the server's next write fails at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    line = wait_for_transfer(server, "/files/huge.bin", timeout=15)
    assert re.search(rf"200 aborted \d+/{HUGE} B", line), line
    assert server.open_files(root) == []
