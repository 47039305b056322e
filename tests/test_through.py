"""Through, Throttle and Delay in-process: bytes intact, pacing honest, waits that wake."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import ClientGone, ConfigurationError, FileStream, Transfer, TransferLog
from wsgipipe._through import Delay, Throttle, Through, parse_rate
from wsgipipe.testing import open_files, wait_until

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    return path


def file_app(path: Path, chunk_size: int = 4096) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = FileStream(path, chunk_size=chunk_size)
        headers = [("Content-Type", "application/octet-stream")]
        start_response("200 OK", [*headers, ("Content-Length", str(stream.size))])
        return stream

    return app


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1k", 1024), ("500", 500), ("2.5M", 2621440), ("1KiB/s", 1024), (" 3 k ", 3072), (8, 8)],
)
def test_parse_rate(text: str, expected: int) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "0", "-1k", "1x", "0.5"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate(text)


class TestThrough:
    def test_maps_every_chunk_and_drops_the_length(self, data_file: Path) -> None:
        app = TestApp(Through(file_app(data_file), bytes.upper), lint=True)
        res = app.get("/")
        assert res.body == data_file.read_bytes().upper()
        assert "Content-Length" not in res.headers or res.headers["Content-Length"] == str(
            len(res.body)
        )
        assert open_files("self", data_file.parent) == []

    def test_keeps_length_when_told(self, data_file: Path) -> None:
        raw = TestApp(Through(file_app(data_file), bytes.upper, keeps_length=True), lint=True)
        res = raw.get("/")
        assert res.headers["Content-Length"] == str(data_file.stat().st_size)

    def test_dropping_chunks_never_yields_empty_ones(self, data_file: Path) -> None:
        seen: list[bytes] = []
        app = Through(file_app(data_file, chunk_size=1024), lambda c: b"" if c[0] else c)
        body = app({"REQUEST_METHOD": "GET"}, lambda *a: None)  # type: ignore[arg-type]
        seen.extend(body)
        body.close()  # type: ignore[attr-defined]
        assert seen and all(seen)
        assert open_files("self", data_file.parent) == []

    def test_head_is_not_touched(self, data_file: Path) -> None:
        res = TestApp(Through(file_app(data_file), bytes.upper), lint=True).head("/")
        assert res.headers["Content-Length"] == str(data_file.stat().st_size)
        assert res.body == data_file.read_bytes(), "passed through, not mapped"


class TestThrottle:
    def test_rate_is_honoured_and_bytes_intact(self, data_file: Path) -> None:
        records: list[Transfer] = []
        app = TestApp(
            TransferLog(Throttle(file_app(data_file), "20k"), on_done=records.append), lint=True
        )
        started = time.monotonic()
        res = app.get("/")
        took = time.monotonic() - started
        assert res.body == data_file.read_bytes()
        # 10240 bytes at 20480 B/s: the last piece leaves at about 0.45 s.
        assert 0.4 <= took < 1.5
        assert records[0].outcome == "finished"
        assert records[0].notes["rate"] == "20480B/s"
        assert res.headers["Content-Length"] == "10240"

    def test_pieces_are_a_tenth_of_the_rate(self, data_file: Path) -> None:
        app = Throttle(file_app(data_file), 10_000)
        body = app({"REQUEST_METHOD": "GET"}, lambda *a: None)  # type: ignore[arg-type]
        first = next(iter(body))
        body.close()  # type: ignore[attr-defined]
        assert len(first) == 1000
        assert open_files("self", data_file.parent) == []


class TestDelay:
    def test_each_chunk_waits(self, data_file: Path) -> None:
        app = TestApp(Delay(file_app(data_file, chunk_size=4096), 0.1), lint=True)
        started = time.monotonic()
        res = app.get("/")
        assert res.body == data_file.read_bytes()
        assert 0.3 <= time.monotonic() - started < 1.0  # three chunks

    def test_rejects_negative(self, data_file: Path) -> None:
        with pytest.raises(ConfigurationError):
            Delay(file_app(data_file), -1)

    def test_disconnect_during_a_delay_releases_the_file_at_once(self, data_file: Path) -> None:
        server, client = socket.socketpair()
        records: list[Transfer] = []
        app = TransferLog(Delay(file_app(data_file), 5), on_done=records.append)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/d", "gunicorn.socket": server}
        body = app(environ, lambda *a: None)  # type: ignore[arg-type]
        threading.Timer(0.2, client.close).start()
        started = time.monotonic()
        try:
            with pytest.raises(ClientGone):
                next(iter(body))
        finally:
            body.close()  # type: ignore[attr-defined]
            server.close()
        assert time.monotonic() - started < 0.3
        assert open_files("self", data_file.parent) == []
        assert records[0].outcome == "aborted"
        assert records[0].reason == "client disconnected"
        assert records[0].error is None


@pytest.mark.server
def test_waitress_disconnect_during_a_delay_releases_the_file_at_once(data_file: Path) -> None:
    """waitress exposes ``client_disconnected`` (with request lookahead), not the socket."""
    from waitress.server import create_server

    records: list[Transfer] = []
    app = TransferLog(Delay(file_app(data_file), 5), on_done=records.append)
    server = create_server(
        app,
        host="127.0.0.1",
        port=0,
        channel_request_lookahead=1,
        threads=2,
        clear_untrusted_proxy_headers=True,
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        port = server.effective_port  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_until(lambda: open_files("self", data_file.parent) != [], 5, 0.005)
            time.sleep(0.2)
        closed = time.monotonic()
        assert wait_until(lambda: open_files("self", data_file.parent) == [], 0.5, 0.005)
        assert time.monotonic() - closed < 0.5
        assert wait_until(lambda: bool(records), 2)
        assert records[0].outcome == "aborted"
        assert records[0].reason == "client disconnected"
    finally:
        server.close()
