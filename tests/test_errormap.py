"""FileErrors: clean answers before the first byte, an abort after it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, HTTPError, RangeNotSatisfiable, Tee, TransferLog, sinks
from wsgipipe._handoff import tracked
from wsgipipe.testing import open_files

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def serve(path: Path, *, eager: bool = True) -> WSGIApplication:
    """Serve ``path``; eager apps read the size (opening the file) before start_response."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = FileStream(path)
        headers = [("Content-Type", "application/octet-stream")]
        if eager:
            headers.append(("Content-Length", str(stream.size)))
        start_response("200 OK", headers)
        return stream

    return app


def raising(exc: Exception) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise exc

    return app


def generator_app(exc: Exception, after: int) -> WSGIApplication:
    """A lazily failing app: start_response and the error both inside the generator."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(3):
            if i == after:
                raise exc
            yield b"chunk%d " % i

    return app


@pytest.mark.parametrize("eager", [True, False])
def test_missing_file_is_404_without_path(tmp_path: Path, eager: bool) -> None:
    app = TestApp(FileErrors(serve(tmp_path / "secret-name.txt", eager=eager)), lint=True)
    response = app.get("/", status=404)
    assert response.body == b"404 Not Found\n"
    assert response.content_type == "text/plain"
    assert "secret-name" not in response.text and str(tmp_path) not in response.text


def test_directory_and_not_a_directory_are_404(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    TestApp(FileErrors(serve(tmp_path)), lint=True).get("/", status=404)
    TestApp(FileErrors(serve(tmp_path / "file" / "below")), lint=True).get("/", status=404)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_is_403_or_404_when_hidden(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.write_bytes(b"x")
    locked.chmod(0)
    TestApp(FileErrors(serve(locked)), lint=True).get("/", status=403)
    TestApp(FileErrors(serve(locked), hide_forbidden=True), lint=True).get("/", status=404)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (PermissionError(13, "Permission denied", "/srv/x"), 403),
        (FileNotFoundError(2, "No such file", "/srv/x"), 404),
        (NotADirectoryError(20, "Not a directory", "/srv/x"), 404),
        (OSError(5, "Input/output error", "/srv/x"), 500),
        (RuntimeError("boom at /srv/x"), 500),
        (HTTPError("teapot", status_hint=418), 418),
    ],
)
def test_status_mapping_hides_details(
    exc: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="wsgipipe.file_errors"):
        response = TestApp(FileErrors(raising(exc)), lint=True).get("/", status=status)
    assert "/srv/x" not in response.text and "Traceback" not in response.text
    if status == 500:
        assert any(r.exc_info for r in caplog.records), "the server log gets the traceback"


def test_416_carries_content_range() -> None:
    response = TestApp(FileErrors(raising(RangeNotSatisfiable(1234))), lint=True).get(
        "/", status=416
    )
    assert response.headers["Content-Range"] == "bytes */1234"


def test_error_in_first_next_is_mapped() -> None:
    app = TestApp(FileErrors(generator_app(FileNotFoundError("x"), after=0)), lint=True)
    assert app.get("/", status=404).body == b"404 Not Found\n"


def test_error_after_first_byte_reaches_the_server_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records: list[str | None] = []
    app = TransferLog(
        FileErrors(generator_app(OSError("late"), after=1)),
        on_done=lambda r: records.append(r.outcome),
    )
    result = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: lambda b: None)
    chunks = iter(result)
    assert next(chunks) == b"chunk0 "
    with caplog.at_level(logging.ERROR, logger="wsgipipe.file_errors"), pytest.raises(OSError):
        next(chunks)
    result.close()  # type: ignore[attr-defined]
    assert records == ["failed"]
    assert any("after the first byte" in r.getMessage() for r in caplog.records)


def test_head_error_has_no_body(tmp_path: Path) -> None:
    response = TestApp(FileErrors(serve(tmp_path / "nope")), lint=True).head("/", status=404)
    assert response.body == b""


def test_successful_file_goes_zero_copy_when_offered(tmp_path: Path) -> None:
    from wsgiref.util import FileWrapper

    path = tmp_path / "f"
    path.write_bytes(b"z" * 1000)
    app = FileErrors(serve(path))
    result = app({"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}, lambda *a: None)  # type: ignore[arg-type,return-value]
    assert isinstance(result, FileWrapper)
    assert b"".join(result) == b"z" * 1000
    result.close()
    assert not open_files(under=tmp_path)


def test_a_teed_body_is_primed_in_place_not_wrapped_again() -> None:
    capture = sinks.Capture()
    teed = Tee(generator_app(OSError("never"), after=99), capture)
    result = FileErrors(teed)({"REQUEST_METHOD": "GET"}, lambda *a: lambda b: None)  # type: ignore[arg-type]
    assert type(result).__name__ == "Observed" and result is not None
    assert tracked(result) is result and result.returned is not None  # type: ignore[attr-defined]
    assert b"".join(result) == b"chunk0 chunk1 chunk2 "
    result.close()  # type: ignore[attr-defined]
    assert bytes(capture.last.body) == b"chunk0 chunk1 chunk2 "


def test_error_in_first_chunk_behind_a_tee_is_mapped() -> None:
    capture = sinks.Capture()
    app = TestApp(
        FileErrors(Tee(generator_app(FileNotFoundError("x"), after=0), capture)), lint=True
    )
    assert app.get("/", status=404).body == b"404 Not Found\n"
