"""TransferLog: one record per response, at close(), with the right outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, Tee, Transfer, TransferLog, sinks

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def file_app(path: Path) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = FileStream(path, chunk_size=1000)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(stream.size))],
        )
        return stream

    return app


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 5000)
    return path


def test_finished_line(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    done: list[Transfer] = []
    app = TestApp(TransferLog(file_app(data), on_done=done.append), lint=True)
    with caplog.at_level(logging.INFO, logger="wsgipipe"):
        app.get("/big.bin")
    [record] = done
    assert (record.status, record.outcome, record.bytes_sent, record.length) == (
        200,
        "finished",
        5000,
        5000,
    )
    [line] = [r.getMessage() for r in caplog.records if r.name == "wsgipipe.transfer_log"]
    assert line.startswith("GET /big.bin 200 finished 5000/5000 B ")


def test_aborted_after_n_bytes(data: Path) -> None:
    done: list[Transfer] = []
    app = TransferLog(file_app(data), on_done=done.append)
    result = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/big.bin"}, lambda *a: lambda b: None)
    chunks = iter(result)
    next(chunks)
    next(chunks)
    assert not done, "nothing is logged before the server closes the body"
    result.close()  # type: ignore[attr-defined]
    [record] = done
    assert record.outcome == "aborted"
    assert record.bytes_sent == 1000
    assert "aborted 1000/5000 B" in record.line()


def test_the_record_is_written_at_close_not_when_the_app_returns(data: Path) -> None:
    done: list[Transfer] = []
    app = TransferLog(file_app(data), on_done=done.append)
    result = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: lambda b: None)
    assert done == []
    b"".join(result)
    assert done == []
    result.close()  # type: ignore[attr-defined]
    assert [r.outcome for r in done] == ["finished"]


def test_head_is_finished_with_no_bytes(data: Path) -> None:
    done: list[Transfer] = []
    TestApp(TransferLog(file_app(data), on_done=done.append), lint=True).head("/")
    assert [(r.outcome, r.bytes_sent) for r in done] == [("finished", 0)]


def test_app_raising_is_failed_and_reraised() -> None:
    done: list[Transfer] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("broken app")

    with pytest.raises(RuntimeError):
        TransferLog(app, on_done=done.append)({"REQUEST_METHOD": "GET"}, lambda *a: None)  # type: ignore[arg-type,return-value]
    assert [r.outcome for r in done] == ["failed"]


def test_digest_sink_reports_into_the_line(data: Path) -> None:
    done: list[Transfer] = []
    app = TestApp(
        TransferLog(FileErrors(Tee(file_app(data), sinks.Digest())), on_done=done.append),
        lint=True,
    )
    app.get("/")
    assert done[0].notes["sha256"] == __import__("hashlib").sha256(b"x" * 5000).hexdigest()
    assert "sha256=" in done[0].line()


def test_404_line_names_the_error(tmp_path: Path) -> None:
    done: list[Transfer] = []
    TestApp(
        TransferLog(FileErrors(file_app(tmp_path / "nope")), on_done=done.append), lint=True
    ).get("/", status=404)
    assert done[0].status == 404 and done[0].outcome == "finished"
    assert isinstance(done[0].error, FileNotFoundError)


def test_hostile_path_cannot_forge_log_lines() -> None:
    record = Transfer("GET", "/x")
    app = TransferLog(lambda e, s: [b""], on_done=lambda r: setattr(record, "path", r.path))
    result = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/a\nGET /forged 200"}, lambda *a: None)  # type: ignore[arg-type]
    result.close()  # type: ignore[attr-defined]
    assert "\n" not in record.path and " " not in record.path
