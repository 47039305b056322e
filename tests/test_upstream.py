"""UpstreamStream and Proxy: an upstream response streamed through, released on every ending.

The upstream is the example app under a real gunicorn (its own transfer
log says how each upstream response ended); a tiny socket server in this
process plays the upstream that dies mid-body or never answers.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from server_checks import fetch, fetch_cut_short
from webtest import TestApp

from examples.clients import proxy_abort
from wsgipipe import ConfigurationError, Proxy, Tee, TransferLog, UpstreamError, sinks
from wsgipipe._upstream import end_to_end
from wsgipipe.testing import (
    GunicornServer,
    TransferRecorder,
    raw_request,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).with_name("apps")
CONFIG = str(REPO / "gunicorn.conf.py")
SMALL = b"small file for the proxy\n" * 40
BIG = 16 * 1024 * 1024


class DyingUpstream:
    """A socket server that announces 1 MB, sends 100 KB, then resets the connection.

    ``/hang`` accepts the request and never answers.
    """

    LENGTH = 1_000_000
    SENT = 100_000

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            if b" /hang " in head:
                conn.recv(1)  # until the proxy gives up
                return
            if b"/noreason" in head.split(b"\r\n", 1)[0]:
                conn.sendall(
                    b"HTTP/1.1 299\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                )
                return
            if b"/echo" in head.split(b"\r\n", 1)[0]:
                self._echo(conn, head)
                return
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                + f"Content-Length: {self.LENGTH}\r\n\r\n".encode()
                + b"d" * self.SENT
            )
            time.sleep(0.2)
            # SO_LINGER 0: close with a reset, as a killed process's socket does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    @staticmethod
    def _echo(conn: socket.socket, data: bytes) -> None:
        """Answer with the request head (as the proxy sent it) and its body."""
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while match and len(body) < int(match.group(1)):
            body += conn.recv(65536)
        reply = head + b"\r\n\r\n" + body
        start = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        conn.sendall(start % len(reply) + reply)

    def close(self) -> None:
        self.listener.close()
        for conn in self._open:
            conn.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upstream-root")
    (path / "small.txt").write_bytes(SMALL)
    with (path / "big.bin").open("wb") as f:
        f.truncate(BIG)
    # The example app makes its own big files at start; tiny ones keep startup fast.
    (path / "big.html").write_bytes(b"<p>big</p>\n")
    return path


@pytest.fixture(scope="module")
def upstream(root: Path) -> Iterator[GunicornServer]:
    with GunicornServer(
        "examples.app:app",
        worker_class="gthread",
        threads=8,
        cwd=REPO,
        env={"WSGIPIPE_ROOT": str(root), "WSGIPIPE_IDLE_TIMEOUT": "5"},
        config=CONFIG,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def dying() -> Iterator[DyingUpstream]:
    server = DyingUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def doomed(root: Path) -> Iterator[GunicornServer]:
    """A second example app, for the test that kills its worker mid-body."""
    with GunicornServer(
        "examples.app:app",
        worker_class="sync",
        cwd=REPO,
        env={"WSGIPIPE_ROOT": str(root)},
        config=CONFIG,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    upstream: GunicornServer, dying: DyingUpstream, doomed: GunicornServer
) -> Iterator[GunicornServer]:
    env = {
        "WSGIPIPE_UPSTREAM": upstream.url,
        "WSGIPIPE_UPSTREAM_2": dying.url,
        "WSGIPIPE_UPSTREAM_3": doomed.url,
    }
    with GunicornServer(
        "proxy_app:app", worker_class="gthread", threads=4, cwd=APPS, env=env, config=CONFIG
    ) as server:
        yield server


def pool_state(proxy: GunicornServer) -> dict[str, int]:
    _, body = fetch(proxy, "/_pool")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", body.decode())}


def upstream_sockets(proxy: GunicornServer, upstream: GunicornServer) -> int:
    [pid] = proxy.worker_pids()
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port == upstream.port and c.status == psutil.CONN_ESTABLISHED
    )


# -- pure rules -------------------------------------------------------------------
def test_hop_by_hop_fields_and_those_named_in_connection_are_dropped() -> None:
    headers = [
        ("Connection", "close, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("X-Private", "secret"),
        ("ETag", '"1"'),
        ("Content-Length", "3"),
    ]
    assert end_to_end(headers) == [("ETag", '"1"'), ("Content-Length", "3")]


def test_bad_upstream_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Proxy("ftp://example.org/")
    with pytest.raises(ConfigurationError):
        Proxy("not a url")


def test_import_wsgipipe_does_not_import_urllib3() -> None:
    code = "import sys, wsgipipe; print('urllib3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# -- in process, against a real upstream ---------------------------------------------
@pytest.mark.server
def test_in_process_proxy_forwards_and_returns_the_connection(
    upstream: GunicornServer,
) -> None:
    proxy = Proxy(upstream.url, maxsize=2)
    recorder = TransferRecorder()
    digest = sinks.Digest("sha256")
    client = TestApp(TransferLog(Tee(proxy, digest), on_done=recorder), lint=True)
    response = client.get("/small.txt", headers={"Accept-Encoding": "identity"})
    assert response.body == SMALL
    for name in ("ETag", "Last-Modified", "Content-Length", "Content-Type", "Accept-Ranges"):
        assert name in response.headers
    assert "Connection" not in response.headers and "Keep-Alive" not in response.headers
    assert recorder.last.outcome == "finished"
    assert proxy.pool.pool is not None and proxy.pool.pool.qsize() == 2
    assert proxy.pool.num_connections == 1
    client.get("/small.txt")
    assert proxy.pool.num_connections == 1  # the connection was reused, not leaked


@pytest.mark.server
def test_range_and_conditional_requests_pass_through(upstream: GunicornServer) -> None:
    client = TestApp(Proxy(upstream.url), lint=True)
    etag = client.get("/small.txt").headers["ETag"]
    ranged = client.get("/small.txt", headers={"Range": "bytes=0-9"}, status=206)
    assert ranged.body == SMALL[:10]
    assert ranged.headers["Content-Range"] == f"bytes 0-9/{len(SMALL)}"
    assert client.get("/small.txt", headers={"If-None-Match": etag}, status=304).body == b""
    client.get("/small.txt", headers={"Range": "bytes=99999-"}, status=416)
    client.get("/missing.txt", status=404)


@pytest.mark.server
def test_closing_early_discards_the_half_read_connection(upstream: GunicornServer) -> None:
    proxy = Proxy(upstream.url, maxsize=2)
    before = len(transfer_lines(upstream.log, "/big.bin"))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/big.bin", "wsgi.url_scheme": "http"}
    body = proxy(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert len(next(iter(body))) > 0
    body.close()  # type: ignore[attr-defined]
    assert proxy.pool.pool is not None and proxy.pool.pool.qsize() == 2
    assert wait_for_transfer(upstream, "/big.bin", count=before + 1).split()[3] == "aborted"


def test_request_body_and_headers_reach_the_upstream(dying: DyingUpstream) -> None:
    client = TestApp(Proxy(dying.url + "/base"), lint=True)
    response = client.post(
        "/echo/a%20b?x=1",
        params=b"payload " * 10_000,
        headers={"Content-Type": "application/x-thing", "Connection": "X-Drop", "X-Drop": "1"},
        extra_environ={"REMOTE_ADDR": "192.0.2.7", "HTTP_HOST": "front.example"},
    )
    head, _, body = response.body.partition(b"\r\n\r\n")
    assert body == b"payload " * 10_000
    assert head.startswith(b"POST /base/echo/a%20b?x=1 HTTP/1.1\r\n")
    lowered = head.lower()
    assert b"\r\ncontent-type: application/x-thing" in lowered
    assert b"\r\nx-forwarded-for: 192.0.2.7" in lowered
    assert b"\r\nx-forwarded-host: front.example" in lowered
    assert f"\r\nhost: 127.0.0.1:{dying.port}".encode() in lowered
    assert b"x-drop" not in lowered  # named in Connection: one hop only


def test_a_status_without_reason_phrase_gets_one(dying: DyingUpstream) -> None:
    response = TestApp(Proxy(dying.url), lint=True).get("/noreason", status=299)
    assert response.status == "299 Unknown" and response.body == b"ok"


@pytest.mark.server
def test_head_is_forwarded(upstream: GunicornServer) -> None:
    response = TestApp(Proxy(upstream.url), lint=True).head("/small.txt")
    assert response.headers["Content-Length"] == str(len(SMALL))
    assert response.body == b""


def test_upstream_refusing_connections_is_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    client = TestApp(Proxy(f"http://127.0.0.1:{port}"), lint=True)
    assert client.get("/x", status=502).body == b"502 Bad Gateway\n"


def test_upstream_read_timeout_is_504(dying: DyingUpstream) -> None:
    client = TestApp(Proxy(dying.url, read_timeout=0.3), lint=True)
    assert client.get("/hang", status=504).body == b"504 Gateway Timeout\n"


def test_upstream_dying_after_first_byte_fails_in_process(dying: DyingUpstream) -> None:
    client = TestApp(Proxy(dying.url), lint=True)
    with pytest.raises(UpstreamError):
        client.get("/die")


# -- under gunicorn ----------------------------------------------------------------
@pytest.mark.server
def test_downstream_abort_reaches_the_upstream_as_aborted(
    proxy: GunicornServer, upstream: GunicornServer
) -> None:
    before = len(transfer_lines(upstream.log, "/big.bin"))
    with raw_request(proxy, "/up/big.bin") as sock:
        got = b""
        while len(got) < 300_000:
            data = sock.recv(65536)
            assert data, got[:200]  # the server closed early: show what it said
            got += data
    left = time.monotonic()
    line = wait_for_transfer(upstream, "/big.bin", count=before + 1, timeout=5)
    assert time.monotonic() - left < 1.0
    assert " 200 aborted " in line
    assert " 200 aborted " in wait_for_transfer(proxy, "/up/big.bin")
    assert wait_until(lambda: pool_state(proxy)["idle"] == 4, 2)


@pytest.mark.server
def test_upstream_process_killed_mid_body_aborts_the_downstream(
    proxy: GunicornServer, doomed: GunicornServer
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/third/limit/big.bin?rate=1M")  # 16 MiB at 1 MiB/s: long enough
    response = conn.getresponse()
    assert response.status == 200
    assert response.read(200_000)
    [worker] = doomed.worker_pids()
    os.kill(worker, signal.SIGKILL)  # the upstream dies mid-body
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    line = wait_for_transfer(proxy, "/third/limit/big.bin")
    assert " 200 failed " in line and "UpstreamError" in line


@pytest.mark.server
def test_upstream_reset_mid_body_aborts_the_downstream(proxy: GunicornServer) -> None:
    response = fetch_cut_short(proxy, "/second/die")  # the downstream is cut too
    assert response.getheader("Content-Length") == str(DyingUpstream.LENGTH)
    line = wait_for_transfer(proxy, "/second/die")
    assert " 200 failed " in line and "UpstreamError" in line


@pytest.mark.server
def test_slow_upstream_and_a_client_that_leaves(
    proxy: GunicornServer, upstream: GunicornServer
) -> None:
    # The upstream holds its first chunk (and so its headers) for 5 s.
    sock = raw_request(proxy, "/up/slow/small.txt?delay=5")
    time.sleep(0.5)
    sock.close()
    left = time.monotonic()
    line = wait_for_transfer(proxy, "/up/slow/small.txt", timeout=3)
    noticed = time.monotonic() - left
    assert "aborted" in line and "client disconnected" in line
    duration = float(re.search(r" (\d+\.\d+)s", line).group(1))  # type: ignore[union-attr]
    assert duration < 0.5 + 0.3, line  # the client left at 0.5 s, not at 5 s
    upstream_line = wait_for_transfer(upstream, "/slow/small.txt", timeout=3)
    assert " aborted " in upstream_line
    assert noticed < 1.0
    assert wait_until(lambda: pool_state(proxy)["idle"] == 4, 2)


@pytest.mark.server
def test_500_requests_with_aborts_leave_the_pool_at_baseline(
    proxy: GunicornServer, upstream: GunicornServer
) -> None:
    for i in range(500):
        kind = i % 3
        if kind == 0:
            _, body = fetch(proxy, "/up/small.txt")
            assert body == SMALL
        elif kind == 1:
            with raw_request(proxy, "/up/big.bin") as sock:
                sock.recv(65536)  # some of the body, then leave
        else:
            raw_request(proxy, "/up/big.bin").close()  # leave before the first byte
    assert wait_until(lambda: len(transfer_lines(proxy.log, "/up/big.bin")) >= 333, 10)
    # Every slot is back in the pool, and no more sockets to the upstream
    # are open than the pool keeps (half-read ones were closed, not pooled).
    assert wait_until(lambda: pool_state(proxy)["idle"] == 4, 2), pool_state(proxy)
    assert wait_until(lambda: upstream_sockets(proxy, upstream) <= 4, 2)
    _, body = fetch(proxy, "/up/small.txt")  # and the pool still works
    assert body == SMALL


@pytest.fixture(scope="module")
def example_proxy(upstream: GunicornServer, root: Path) -> Iterator[GunicornServer]:
    """A second example app whose /proxy/ route leads to the first one."""
    env = {"WSGIPIPE_ROOT": str(root), "WSGIPIPE_UPSTREAM": upstream.url}
    with GunicornServer(
        "examples.app:app", worker_class="gthread", threads=4, cwd=REPO, env=env, config=CONFIG
    ) as server:
        yield server


@pytest.mark.server
def test_client_experiment_sees_the_abort_in_the_upstream_log(
    example_proxy: GunicornServer, upstream: GunicornServer
) -> None:
    assert upstream.log_path is not None
    url = f"{example_proxy.url}/proxy/big.bin"
    line = proxy_abort.run(url, upstream.log_path, after=300_000, timeout=1.0)
    assert line is not None, "the upstream logged nothing within a second"
    assert " 200 aborted " in line
    assert " 200 aborted " in wait_for_transfer(example_proxy, "/proxy/big.bin")
