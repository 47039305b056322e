"""Disconnects and the idle timeout on gunicorn's TLS sockets (``certfile``/``keyfile``).

The certificate is made by the test (``cryptography``). HTTP/1.1 and
HTTP/2 (ALPN) are served by the same gunicorn.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgipipe.testing import GunicornServer, wait_for_transfer

pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
x509 = pytest.importorskip("cryptography.x509")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from h2_client import H2Client  # noqa: E402

pytestmark = pytest.mark.server

APPS = Path(__file__).with_name("apps")
BIG = 64 * 1024 * 1024


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tlsroot")
    (folder / "small.txt").write_bytes(b"x" * 20_000)
    with open(folder / "big.bin", "wb") as f:
        f.truncate(BIG)
    return folder


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tlscert"))
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
    assert not server.open_files(root)
    _quiet(server)


def test_a_delay_sees_a_tls_client_leave(server: GunicornServer, root: Path) -> None:
    # A TLS client sends close_notify before its FIN: unread bytes ahead of it.
    with _tls_get(server.port, "/slow/small.txt") as sock:
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still in its delay
    line = wait_for_transfer(server, "/slow/small.txt", timeout=3)
    assert " aborted 0/20000 B" in line and "client disconnected" in line, line
    assert not server.open_files(root)
    _quiet(server)


def test_http2_over_tls_sees_a_stream_reset_during_a_delay(
    server: GunicornServer, root: Path
) -> None:
    with H2Client(server.port, tls=True) as client:
        sid = client.get("/slow/small.txt")
        client.read_until(lambda: False, timeout=0.5)
        client.reset(sid)
        line = wait_for_transfer(server, "/slow/small.txt", count=2, timeout=3)
        assert " aborted 0/20000 B" in line and "client reset stream" in line, line
        again = client.get("/file/small.txt")
        assert client.read_until(lambda: client.replies[again].ended, ack=True)
        assert client.replies[again].data == 20_000
    assert not server.open_files(root)
    _quiet(server)


def test_http2_over_tls_resets_a_stalled_stream_alone(server: GunicornServer) -> None:
    with H2Client(server.port, tls=True, window=16_384) as client:
        sid = client.get("/file/big.bin")
        assert client.read_until(lambda: client.replies[sid].reset is not None, timeout=5)
        again = client.get("/file/small.txt")
        assert client.read_until(lambda: client.replies[again].ended, ack=True)
    line = wait_for_transfer(server, "/file/big.bin", count=2)
    assert re.search(r" aborted 16384/67108864 B .*idle timeout 1s", line), line
    _quiet(server)
