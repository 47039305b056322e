"""Tee: every chunk reaches every sink; sinks never break the response."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import resource
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import ConfigurationError, FileStream, SinkError, Tee, TransferLog, sinks
from wsgipipe.testing import disconnect_after, open_files

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def file_app(path: Path, chunk_size: int = 65536) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = FileStream(path, chunk_size=chunk_size)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(stream.size))],
        )
        return stream

    return app


class ClosingList:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def list_app(body: ClosingList) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    return app


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(300_000))
    return path


class BrokenSink:
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in
        self.closed = False
        self.written = 0

    def write(self, data: bytes) -> None:
        if self.fail_in == "write":
            raise OSError("sink is gone")
        self.written += len(data)

    def close(self) -> None:
        self.closed = True
        if self.fail_in == "close":
            raise OSError("close failed")


def test_shared_and_per_response_sinks_see_the_exact_body(data: Path) -> None:
    shared = io.BytesIO()
    capture = sinks.Capture()
    digest = sinks.Digest("sha256")
    app = TestApp(Tee(file_app(data), shared, capture, digest), lint=True)
    body = app.get("/data.bin").body
    assert body == data.read_bytes()
    assert shared.getvalue() == body
    assert bytes(capture.last.body) == body
    assert capture.last.outcome == "finished" and capture.last.closed
    assert digest.last is not None
    assert digest.last.hexdigest() == hashlib.sha256(body).hexdigest()
    assert digest.last.scope == "full"
    assert not shared.closed, "shared sinks are flushed, never closed"
    assert not open_files(under=data.parent)


def test_tee_reads_in_python_even_when_a_file_wrapper_is_offered(data: Path) -> None:
    capture = sinks.Capture()
    app = TestApp(
        TransferLog(Tee(file_app(data), capture)),
        extra_environ={"wsgi.file_wrapper": _wrapper},
        lint=True,
    )
    records: list[str] = []
    app.app.on_done = lambda r: records.append(r.notes.get("via", ""))
    assert app.get("/").body == bytes(capture.last.body)
    assert records == ["python"]


def _wrapper(filelike: FileStream, blksize: int = 8192) -> Iterable[bytes]:
    from wsgiref.util import FileWrapper

    return FileWrapper(filelike, blksize)


@pytest.mark.parametrize("fail_in", ["write", "close"])
def test_a_broken_sink_is_detached_and_the_client_body_is_intact(
    data: Path, fail_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenSink(fail_in)
    healthy = sinks.Capture()
    app = TestApp(Tee(file_app(data, chunk_size=10_000), lambda *a: broken, healthy), lint=True)
    with caplog.at_level(logging.ERROR, logger="wsgipipe.tee"):
        body = app.get("/").body
    assert body == data.read_bytes()
    assert bytes(healthy.last.body) == body, "other sinks keep receiving"
    assert broken.closed, "a per-response sink is closed even after it failed"
    failures = [r for r in caplog.records if r.name == "wsgipipe.tee"]
    assert len(failures) == 1, "logged once, not once per chunk"
    assert not open_files(under=data.parent)


def test_strict_mode_fails_the_response(data: Path) -> None:
    body = ClosingList([b"a", b"b"])
    app = Tee(list_app(body), BrokenSink("write"), strict=True)
    result = app({"REQUEST_METHOD": "GET"}, lambda s, h, e=None: lambda b: None)
    with pytest.raises(SinkError):
        list(result)
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1


def test_app_close_exactly_once_on_every_path() -> None:
    for stop_after in (0, 1, 2):
        body = ClosingList([b"a", b"b"])
        result = Tee(list_app(body), io.BytesIO())(
            {"REQUEST_METHOD": "GET"}, lambda s, h, e=None: lambda b: None
        )
        for _, _chunk in zip(range(stop_after), result, strict=False):
            pass
        result.close()  # type: ignore[attr-defined]
        result.close()  # type: ignore[attr-defined]
        assert body.closed == 1


def test_head_through_two_stacked_layers_closes_the_inner_iterable() -> None:
    body = ClosingList([])
    app = TestApp(TransferLog(Tee(Tee(list_app(body), io.BytesIO()), io.BytesIO())), lint=True)
    app.head("/")
    assert body.closed == 1


def test_sink_must_write_or_be_a_factory() -> None:
    with pytest.raises(ConfigurationError, match="write"):
        Tee(list_app(ClosingList([])), 42)


def test_hundred_mib_tee_to_a_file_keeps_memory_flat(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: no disk cost
    copies = tmp_path / "copies"
    app = Tee(file_app(big, chunk_size=1 << 20), sinks.DirectorySink(copies))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/big.bin"}, lambda *a: lambda b: None)
    digest = hashlib.sha256()
    for chunk in result:
        digest.update(chunk)
    result.close()  # type: ignore[attr-defined]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    [copy] = list(copies.iterdir())
    assert copy.stat().st_size == big.stat().st_size
    assert _sha256(copy) == digest.hexdigest()
    assert grown_kib < 32 * 1024, f"peak RSS grew by {grown_kib} KiB for a 100 MiB body"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_an_aborted_copy_holds_exactly_what_the_server_accepted(data: Path) -> None:
    capture = sinks.Capture()
    result = disconnect_after(Tee(file_app(data, chunk_size=65536), capture), 65536)
    assert result.received == data.read_bytes()[:65536]
    assert bytes(capture.last.body) == result.received
    assert capture.last.outcome == "aborted"


def test_strict_mode_copies_before_handing_on(data: Path) -> None:
    capture = sinks.Capture()
    disconnect_after(Tee(file_app(data, chunk_size=65536), capture, strict=True), 65536)
    assert bytes(capture.last.body) == data.read_bytes()[:131072], "includes the chunk in flight"
