"""Connection (disconnect polling) and IdleTimeout, on real socket pairs in-process."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wsgipipe import (
    ClientGone,
    ConfigurationError,
    Connection,
    Delay,
    FileStream,
    IdleTimeout,
    Observed,
    Transfer,
    TransferLog,
)
from wsgipipe.testing import open_files

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def environ_for(sock: socket.socket | None = None, **extra: object) -> dict[str, object]:
    environ: dict[str, object] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/f"}
    if sock is not None:
        environ["gunicorn.socket"] = sock
    environ.update(extra)
    return environ


def close_later(sock: socket.socket, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, sock.close)
    timer.start()
    return timer


class TestGone:
    def test_quiet_client_is_not_gone(self, pair: tuple[socket.socket, socket.socket]) -> None:
        assert not Connection(environ_for(pair[0])).gone()

    def test_closed_client_is_gone(self, pair: tuple[socket.socket, socket.socket]) -> None:
        pair[1].close()
        assert Connection(environ_for(pair[0])).gone()

    def test_pipelined_bytes_are_not_a_disconnect(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        pair[1].sendall(b"GET /next HTTP/1.1\r\n")
        conn = Connection(environ_for(pair[0]))
        assert not conn.gone()
        assert pair[0].recv(100) == b"GET /next HTTP/1.1\r\n", "peek consumed nothing"

    def test_waitress_probe(self) -> None:
        flag = {"gone": False}
        conn = Connection(
            environ_for(None, **{"waitress.client_disconnected": lambda: flag["gone"]})
        )
        assert conn.observable and not conn.gone()
        flag["gone"] = True
        assert conn.gone()

    def test_no_socket_no_probe_degrades(self) -> None:
        conn = Connection(environ_for())
        assert not conn.observable
        assert not conn.gone()


class TestWait:
    def test_wait_sleeps_the_full_time_while_the_client_stays(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        started = time.monotonic()
        Connection(environ_for(pair[0])).wait(0.3)
        assert 0.29 <= time.monotonic() - started < 1.0

    def test_wait_wakes_at_once_when_the_client_leaves(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        close_later(pair[1], 0.2)
        started = time.monotonic()
        with pytest.raises(ClientGone, match="client disconnected"):
            Connection(environ_for(pair[0])).wait(5)
        assert time.monotonic() - started < 0.3, "woke within 100 ms of the disconnect"

    def test_wait_with_pipelined_data_still_waits(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
        started = time.monotonic()
        Connection(environ_for(pair[0])).wait(0.3)
        assert 0.29 <= time.monotonic() - started < 1.0

    def test_wait_polls_waitress_probe(self) -> None:
        gone_at = time.monotonic() + 0.1
        conn = Connection(
            environ_for(
                None, **{"waitress.client_disconnected": lambda: time.monotonic() > gone_at}
            )
        )
        with pytest.raises(ClientGone):
            conn.wait(5)
        assert time.monotonic() - gone_at < 0.2

    def test_wait_without_anything_observable_just_sleeps(self) -> None:
        started = time.monotonic()
        Connection(environ_for()).wait(0.1)
        assert time.monotonic() - started >= 0.1


def chunks_app(count: int, size: int = 65536) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(count * size))])
        return Observed([b"x" * size] * count)

    return app


def serve_like_gunicorn(
    app: WSGIApplication, environ: dict[str, object], sock: socket.socket
) -> None:
    """Write the body the way gunicorn does: sendall per chunk, or sendfile; close in finally."""
    result = app(environ, lambda status, headers, exc_info=None: None)  # type: ignore[arg-type]
    try:
        filelike = getattr(result, "filelike", result)
        if isinstance(filelike, FileStream) and environ.get("wsgi.file_wrapper"):
            sock.sendfile(filelike, offset=0, count=filelike.size)
        else:
            for chunk in result:
                sock.sendall(chunk)
    finally:
        result.close()  # type: ignore[attr-defined]


class FileWrapper:
    def __init__(self, filelike: FileStream, block_size: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.filelike)

    def close(self) -> None:
        self.filelike.close()


class TestIdleTimeout:
    def test_rejects_a_useless_timeout(self) -> None:
        with pytest.raises(ConfigurationError):
            IdleTimeout(chunks_app(1), 0)

    def test_stalled_reader_is_cut_off_and_logged(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        server, _client = pair  # the client never reads
        records: list[Transfer] = []
        app = TransferLog(IdleTimeout(chunks_app(400), 0.3), on_done=records.append)
        started = time.monotonic()
        with pytest.raises(BrokenPipeError):
            serve_like_gunicorn(app, environ_for(server), server)
        assert 0.3 <= time.monotonic() - started < 0.3 * 1.25 + 0.2
        (record,) = records
        assert record.outcome == "aborted"
        assert record.reason == "idle timeout 0.3s"

    def test_slow_but_moving_reader_is_not_cut(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        server, client = pair
        records: list[Transfer] = []
        app = TransferLog(IdleTimeout(chunks_app(40), 0.5), on_done=records.append)
        got = bytearray()

        def slow_reader() -> None:
            deadline = time.monotonic() + 20
            while len(got) < 40 * 65536 and time.monotonic() < deadline:
                got.extend(client.recv(256 * 1024))
                time.sleep(0.05)

        reader = threading.Thread(target=slow_reader)
        reader.start()
        serve_like_gunicorn(app, environ_for(server), server)
        reader.join(25)
        assert len(got) == 40 * 65536
        assert records[0].outcome == "finished"
        assert records[0].reason is None

    def test_sendfile_path_is_cut_off_too(
        self, pair: tuple[socket.socket, socket.socket], tmp_path: Path
    ) -> None:
        big = tmp_path / "big.bin"
        big.write_bytes(b"y" * (16 * 1024 * 1024))
        server, _client = pair

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            stream = FileStream(big)
            start_response("200 OK", [("Content-Length", str(stream.size))])
            return stream

        records: list[Transfer] = []
        logged = TransferLog(IdleTimeout(app, 0.3), on_done=records.append)
        environ = environ_for(server, **{"wsgi.file_wrapper": FileWrapper})
        with pytest.raises(BrokenPipeError):
            serve_like_gunicorn(logged, environ, server)
        assert records[0].outcome == "aborted"
        assert records[0].reason == "idle timeout 0.3s"
        assert records[0].notes.get("via") == "sendfile"
        assert 0 < records[0].bytes_sent < big.stat().st_size
        assert open_files("self", tmp_path) == []

    def test_other_errors_are_not_called_idle(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        server, client = pair
        client.close()
        records: list[Transfer] = []
        app = TransferLog(IdleTimeout(chunks_app(400), 5), on_done=records.append)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            serve_like_gunicorn(app, environ_for(server), server)
        assert records[0].outcome == "aborted"
        assert records[0].reason is None

    def test_a_response_slow_to_produce_is_not_idle(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        server, client = pair
        records: list[Transfer] = []
        app = TransferLog(IdleTimeout(Delay(chunks_app(2, 1024), 0.4), 0.2), on_done=records.append)
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(client.recv(4096) + client.recv(4096)))
        reader.start()
        serve_like_gunicorn(app, environ_for(server), server)
        reader.join(5)
        assert len(got) == 2048
        assert records[0].outcome == "finished"

    def test_without_a_socket_the_app_is_untouched(self) -> None:
        inner = chunks_app(1)
        environ = environ_for()
        result = IdleTimeout(inner, 1)(environ, lambda *a: None)  # type: ignore[arg-type]
        assert isinstance(result, Observed)
        assert list(result) == [b"x" * 65536]
        result.close()
        assert result.outcome == "finished"


class TestClientGoneIsAnAbort:
    def test_client_gone_from_a_body_records_aborted_with_reason(self) -> None:
        def source() -> Iterator[bytes]:
            yield b"a"
            raise ClientGone("client disconnected")

        body = Observed(source())
        assert next(body) == b"a"
        with pytest.raises(ClientGone):
            next(body)
        body.close()
        assert body.bytes_sent == 1, "the chunk before the disconnect was written"
        assert body.outcome == "aborted"
        assert body.reason == "client disconnected"
        assert body.error is None

    def test_client_gone_looks_like_a_reset_to_servers(self) -> None:
        # gunicorn logs ECONNRESET at debug level and anything else with a traceback.
        assert ClientGone("client disconnected").errno == errno.ECONNRESET
