"""Requests and checks shared by several suites: what a framework integration must do (the
Flask and Django suites run the same tests on their own app), plain GETs on a fresh
connection to a real gunicorn, and the example app's launcher."""

from __future__ import annotations

import http.client
import re
import socket
import struct
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from webtest import TestResponse

from wsgipipe.testing import (
    GunicornServer,
    TraceUnavailable,
    raw_request,
    trace_syscalls,
    wait_for_transfer,
)

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "tests" / "apps"
BIG = "/files/big.bin"
HUGE = 64 * 1024 * 1024


#: The test apps' routes that fail with a file error, and the status each must answer with.
FILE_ERRORS = [
    ("/read/missing.bin", 404),
    ("/files/missing.bin", 404),
    ("/forbidden", 403),
    ("/broken", 500),
]


def check_error_answer(response: TestResponse, status: int, root: Path) -> None:
    """A file error's answer is the status line's text, not cached, with no path or traceback."""
    assert response.body == f"{status} {HTTPStatus(status).phrase}\n".encode()
    assert response.headers["Cache-Control"] == "no-store"
    assert str(root) not in response.text


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


class UnderGunicorn:
    """The tests every framework integration passes under a real gunicorn. A suite subclasses
    it as ``TestUnderGunicorn``, names its ``app`` (gunicorn's APP_MODULE, run in tests/apps)
    and its ``env(root)``, and provides the fixture ``root`` (a folder with a big.bin of a few
    MiB). The ``server`` fixture runs that app on gthread and on sync workers."""

    app: str

    def env(self, root: Path) -> dict[str, str]:
        raise NotImplementedError

    @pytest.fixture(params=["gthread", "sync"])
    def server(self, request: pytest.FixtureRequest, root: Path) -> Iterator[GunicornServer]:
        worker_class = request.param
        with GunicornServer(self.app, worker_class=worker_class, cwd=APPS, env=self.env(root)) as s:
            yield s

    @pytest.mark.server
    def test_a_download_goes_through_sendfile(self, server: GunicornServer, root: Path) -> None:
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

    @pytest.mark.server
    def test_a_range_is_zero_copy_too(self, server: GunicornServer, root: Path) -> None:
        raw = get(server, BIG, {"Range": "bytes=100000-1099999"})
        assert raw.startswith(b"HTTP/1.1 206 ")
        assert raw.endswith((root / "big.bin").read_bytes()[100000:1100000])
        line = wait_for_transfer(server, BIG)
        assert re.search(r"206 finished 1000000/1000000 B .*via=sendfile", line), line

    @pytest.mark.server
    def test_the_offloading_worker_takes_the_response_too(self, root: Path) -> None:
        size = (root / "big.bin").stat().st_size
        worker = "wsgipipe.gunicorn.OffloadWorker"
        env = self.env(root)
        with GunicornServer(self.app, worker_class=worker, cwd=APPS, env=env) as server:
            assert get(server, BIG).endswith((root / "big.bin").read_bytes())
            line = wait_for_transfer(server, BIG, timeout=10)
        assert f"200 finished {size}/{size} B" in line and "via=offload" in line, line

    @pytest.mark.server
    def test_file_errors_are_404_403_500(self, server: GunicornServer) -> None:
        for path, status in [("/read/missing.bin", 404), ("/forbidden", 403), ("/broken", 500)]:
            raw = get(server, path)
            assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
            assert b"Traceback" not in raw
            assert f"{status} finished" in wait_for_transfer(server, path)

    @pytest.mark.server
    def test_head_reads_nothing_and_an_abort_is_recorded(
        self, server: GunicornServer, root: Path
    ) -> None:
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
