"""HTTP/2 under real gunicorn 27 (``--http-protocols h2,h1``): h2c and TLS with ALPN.

The client (tests/h2_client.py) drives flow control exactly: a stream whose
window it never opens again is stalled, one it resets is gone while the
connection stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgipipe.testing import GunicornServer, wait_for_transfer, wait_until

pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")

from h2_client import H2Client
from tls_cert import self_signed

pytestmark = pytest.mark.server

APPS = Path(__file__).with_name("apps")
BIG = 64 * 1024 * 1024
CANCEL = 0x8


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("h2root")
    (folder / "small.txt").write_bytes(b"x" * 20_000)
    with open(folder / "big.bin", "wb") as f:
        f.truncate(BIG)  # sparse: read as zeros
    return folder


def _gunicorn(request: pytest.FixtureRequest, root: Path, **env: str) -> GunicornServer:
    args = ["--http-protocols", "h2,h1"]
    if request.param == "tls":
        folder = request.getfixturevalue("tmp_path_factory").mktemp("cert")
        cert, key = self_signed(folder)
        args += ["--certfile", str(cert), "--keyfile", str(key)]
    else:
        args += ["--http2-cleartext", "prior-knowledge"]
    env["WSGIPIPE_TEST_ROOT"] = str(root)
    return GunicornServer("h2_app:app", cwd=APPS, env=env, args=args, threads=4)


@pytest.fixture(scope="module", params=["h2c", "tls"])
def server(request: pytest.FixtureRequest, root: Path) -> Iterator[GunicornServer]:
    with _gunicorn(request, root, H2_IDLE_TIMEOUT="1", H2_DELAY="20") as srv:
        yield srv


@pytest.fixture(scope="module", params=["h2c", "tls"])
def paced(request: pytest.FixtureRequest, root: Path) -> Iterator[GunicornServer]:
    with _gunicorn(request, root, H2_IDLE_TIMEOUT="30", H2_MIN_RATE="4k", H2_GRACE="1") as srv:
        yield srv


def _client(server: GunicornServer, **options: int) -> H2Client:
    return H2Client(server.port, tls="--certfile" in server.args, **options)


def _quiet(server: GunicornServer) -> None:
    """No disconnect may reach gunicorn's log as an error."""
    assert "[ERROR]" not in server.log and "Traceback" not in server.log, server.log[-3000:]


def _small_after(client: H2Client) -> None:
    """The same connection still serves a request in full."""
    again = client.get("/file/small.txt")
    assert client.read_until(lambda: client.replies[again].ended, ack=True)
    assert client.replies[again].status == 200 and client.replies[again].data == 20_000
    assert client.goaway is None and not client.closed


def test_a_full_stream_is_finished_with_its_size(server: GunicornServer) -> None:
    with _client(server, window=1 << 20) as client:
        sid = client.get("/file/small.txt")
        assert client.read_until(lambda: client.replies[sid].ended, ack=True)
    line = wait_for_transfer(server, "/file/small.txt")
    assert " finished 20000/20000 B" in line


def test_a_stalled_stream_is_reset_alone_with_the_idle_reason(server: GunicornServer) -> None:
    # A 16 KiB window the client never opens again: gunicorn waits for
    # WINDOW_UPDATE with nothing queued in the socket.
    with _client(server, window=16_384) as client:
        sid = client.get("/file/big.bin")
        assert client.read_until(lambda: client.replies[sid].reset is not None, timeout=5)
        assert client.replies[sid].reset == CANCEL
        assert client.replies[sid].data == 16_384
        _small_after(client)
    line = wait_for_transfer(server, "/file/big.bin")
    assert re.search(r" aborted 16384/67108864 B .*idle timeout 1s", line), line
    _quiet(server)


def test_a_reader_that_stops_reading_the_socket_is_cut(server: GunicornServer) -> None:
    # Window wide open, socket full: every stream is stuck behind the same
    # buffer, so the connection is what the idle timeout cuts.
    with _client(server, window=BIG, rcvbuf=4096) as client:
        sid = client.get("/file/big.bin")
        assert client.read_until(lambda: client.replies[sid].data > 0)
        line = wait_for_transfer(server, "/file/big.bin", count=2, timeout=6)
    assert re.search(r" aborted \d+/67108864 B .*idle timeout 1s", line), line
    _quiet(server)


def test_a_reset_under_a_large_window_is_aborted_not_finished(server: GunicornServer) -> None:
    # gunicorn never needs to read while the window is open; the body reads
    # the connection between chunks and finds the reset.
    with _client(server, window=BIG) as client:
        sid = client.get("/file/big.bin")
        assert client.read_until(lambda: client.replies[sid].data >= 1536 * 1024, ack=True)
        client.reset(sid)
        line = wait_for_transfer(server, "/file/big.bin", count=3, timeout=10)
        client.read_until(lambda: False, timeout=0.3, ack=True)  # drain what was in flight
        _small_after(client)
    sent = int(re.search(r" aborted (\d+)/67108864 B", line).group(1))  # type: ignore[union-attr]
    assert 1536 * 1024 <= sent < BIG and "client reset stream" in line, line
    _quiet(server)


def test_a_delay_sees_the_stream_reset(server: GunicornServer, root: Path) -> None:
    with _client(server) as client:
        sid = client.get("/slow/small.txt")
        client.read_until(lambda: False, timeout=0.5)  # the app is in its delay: no headers yet
        client.reset(sid)
        line = wait_for_transfer(server, "/slow/small.txt", timeout=3)
        assert " aborted 0/20000 B" in line and "client reset stream" in line, line
        _small_after(client)
    assert wait_until(lambda: not server.open_files(root), 2), server.open_files(root)
    _quiet(server)


def test_a_delay_sees_the_close_behind_unread_frames(server: GunicornServer, root: Path) -> None:
    with _client(server) as client:
        client.get("/slow/small.txt")
        client.read_until(lambda: False, timeout=0.5)  # the app is in its delay: no headers yet
        client.ping()  # unread frames ahead of the FIN: a PING and a second request
        client.get("/file/small.txt")
    line = wait_for_transfer(server, "/slow/small.txt", count=2, timeout=3)
    assert " aborted 0/20000 B" in line and "client disconnected" in line, line
    assert wait_until(lambda: not server.open_files(root), 2), server.open_files(root)
    _quiet(server)


def test_a_stream_slower_than_the_minimum_rate_is_reset_alone(paced: GunicornServer) -> None:
    # The client opens its window 100 bytes every 0.2 s (500 B/s, below 4k):
    # the socket queue stays empty, only the stream waits.
    with _client(paced, window=4096) as client:
        sid = client.get("/file/big.bin")
        assert client.trickle(sid, 100, 0.2, timeout=8)
        assert client.replies[sid].reset == CANCEL and not client.replies[sid].ended
        _small_after(client)
    line = wait_for_transfer(paced, "/file/big.bin")
    assert re.search(r" aborted \d+/67108864 B .*min rate", line), line
    _quiet(paced)


def test_a_stream_at_a_good_pace_is_not_cut(paced: GunicornServer) -> None:
    with _client(paced, window=4096) as client:
        sid = client.get("/file/small.txt")
        # 4 KiB at once, then 1 KiB every 0.1 s: about 10 KB/s, above the floor.
        assert client.trickle(sid, 1024, 0.1, timeout=12)
        assert client.replies[sid].ended and client.replies[sid].data == 20_000
    assert " finished 20000/20000 B" in wait_for_transfer(paced, "/file/small.txt")
