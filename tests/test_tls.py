"""Disconnects and the idle timeout on gunicorn's TLS sockets (``certfile``/``keyfile``), HTTP/1.1.

The certificate is made by the test (``cryptography``). HTTP/2 over TLS
(ALPN) runs every test of tests/test_http2.py.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgipipe.testing import GunicornServer, wait_for_transfer, wait_until

pytest.importorskip("cryptography", reason="the test makes its certificate with it")

from tls_cert import self_signed

pytestmark = pytest.mark.server

APPS = Path(__file__).with_name("apps")
BIG = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tlsroot")
    (folder / "small.txt").write_bytes(b"x" * 20_000)
    with open(folder / "big.bin", "wb") as f:
        f.truncate(BIG)
    return folder


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    cert, key = self_signed(tmp_path_factory.mktemp("tlscert"))
    env = {"WSGIPIPE_TEST_ROOT": str(root), "H2_IDLE_TIMEOUT": "1", "H2_DELAY": "20"}
    args = ["--certfile", str(cert), "--keyfile", str(key), "--http-protocols", "h2,h1"]
    with GunicornServer("h2_app:app", cwd=APPS, env=env, args=args, threads=4) as srv:
        yield srv


def _tls_get(port: int, path: str, *, rcvbuf: int | None = None) -> ssl.SSLSocket:
    raw = socket.socket()
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    sock = context.wrap_socket(raw)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _quiet(server: GunicornServer) -> None:
    assert "[ERROR]" not in server.log and "Traceback" not in server.log, server.log[-3000:]


def test_a_stalled_tls_reader_is_cut_by_the_idle_timeout(
    server: GunicornServer, root: Path
) -> None:
    with _tls_get(server.port, "/file/big.bin", rcvbuf=4096) as sock:
        sock.recv(1024)  # the head has come: then read nothing more
        line = wait_for_transfer(server, "/file/big.bin", timeout=6)
    assert re.search(r" aborted \d+/67108864 B .*idle timeout 1s", line), line
    assert wait_until(lambda: not server.open_files(root), 2), server.open_files(root)
    _quiet(server)


def test_a_delay_sees_a_tls_client_leave(server: GunicornServer, root: Path) -> None:
    # A TLS client sends close_notify before its FIN: unread bytes ahead of it.
    with _tls_get(server.port, "/slow/small.txt") as sock:
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still in its delay
    line = wait_for_transfer(server, "/slow/small.txt", timeout=3)
    assert " aborted 0/20000 B" in line and "client disconnected" in line, line
    assert wait_until(lambda: not server.open_files(root), 2), server.open_files(root)
    _quiet(server)
