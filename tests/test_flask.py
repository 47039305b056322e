"""wsgipipe.flask: a real Flask app in production mode, in-process and under gunicorn."""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from wsgiref.util import FileWrapper

import flask
import pytest
import server_checks
from webtest import TestApp

from wsgipipe import FileStream
from wsgipipe.flask import FileResponse
from wsgipipe.testing import (
    GunicornServer,
    LeakCheck,
    TransferRecorder,
    disconnect_after,
    wait_for_transfer,
)

APPS = Path(__file__).parent / "apps"
SIZE = 2 * 1024 * 1024


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, APPS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flask_app = _load("flask_app")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    (tmp_path / "small.txt").write_bytes(b"hello, flask\n")
    return tmp_path


def client(root: Path, **options: object) -> TestApp:
    return TestApp(flask_app.create_app(root, **options), lint=True)


# -- file errors: the same answer in production as in tests --------------------
@pytest.mark.parametrize("testing", [False, True], ids=["production", "app.testing"])
@pytest.mark.parametrize(("url", "status"), server_checks.FILE_ERRORS)
def test_file_errors_answer_alike_in_production_and_tests(
    root: Path, testing: bool, url: str, status: int
) -> None:
    response = client(root, testing=testing).get(url, status=status)
    server_checks.check_error_answer(response, status, root)


def test_without_the_extension_production_answers_500(root: Path) -> None:
    # What the extension fixes: Flask catches the view's FileNotFoundError...
    client(root, extension=False).get("/read/missing.bin", status=500)
    # ...while under app.testing it lets the exception through to the test.
    with pytest.raises(FileNotFoundError):
        client(root, testing=True, extension=False).get("/read/missing.bin")


def test_hide_forbidden_answers_404(root: Path) -> None:
    client(root, hide_forbidden=True).get("/forbidden", status=404)


def test_a_missing_file_is_logged_and_recorded(
    root: Path, transfer_recorder: TransferRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    client(root).get("/files/missing.bin", status=404)
    record = transfer_recorder.last
    assert (record.status, record.outcome) == (404, "finished")
    assert isinstance(record.error, FileNotFoundError)
    assert "404 for GET /files/missing.bin: FileNotFoundError" in caplog.text


def test_head_of_a_missing_file_is_an_empty_404(root: Path) -> None:
    response = client(root).head("/files/missing.bin", status=404)
    assert response.body == b""


@pytest.mark.parametrize("name", ["../secret", "..%2fsecret", "a/../../secret", "%2e%2e/secret"])
def test_a_path_outside_the_directory_is_404(root: Path, name: str) -> None:
    (root.parent / "secret").write_text("not for you")
    client(root).get(f"/files/{name}", status=404)


# -- send_file: ranges, conditions, HEAD, records ---------------------------------
def test_send_file_serves_the_file_and_records_it(
    root: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    response = client(root).get("/files/big.bin")
    assert response.body == (root / "big.bin").read_bytes()
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"].startswith('"')
    record = transfer_recorder.last
    assert (record.outcome, record.bytes_sent, record.length) == ("finished", SIZE, SIZE)


def test_a_range_is_a_206(root: Path, transfer_recorder: TransferRecorder) -> None:
    response = client(root).get("/files/big.bin", headers={"Range": "bytes=100-199"}, status=206)
    assert response.body == (root / "big.bin").read_bytes()[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert transfer_recorder.last.bytes_sent == 100


def test_several_ranges_are_multipart(root: Path) -> None:
    response = client(root).get("/files/big.bin", headers={"Range": "bytes=0-9,1000-1009"})
    assert response.status_int == 206
    assert response.content_type == "multipart/byteranges"
    data = (root / "big.bin").read_bytes()
    assert data[:10] in response.body and data[1000:1010] in response.body


def test_an_unsatisfiable_range_is_a_416(root: Path) -> None:
    response = client(root).get("/files/small.txt", headers={"Range": "bytes=500-"}, status=416)
    assert response.headers["Content-Range"] == "bytes */13"


def test_conditional_get(root: Path) -> None:
    app = client(root)
    etag = app.get("/files/small.txt").headers["ETag"]
    not_modified = app.get("/files/small.txt", headers={"If-None-Match": etag}, status=304)
    assert not_modified.body == b""
    assert not_modified.headers["ETag"] == etag
    app.get("/files/small.txt", headers={"If-Match": '"other"'}, status=412)


def test_head_sends_headers_only(
    root: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    response = client(root).head("/files/big.bin")
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.body == b""
    assert (transfer_recorder.last.outcome, transfer_recorder.last.bytes_sent) == ("finished", 0)


def test_attachment_names_follow_rfc_6266(root: Path) -> None:
    response = client(root).get("/download/small.txt")
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Rapport%20%C3%A9t%C3%A9.bin" in disposition


def test_the_view_adds_a_note_to_its_transfer_line(
    root: Path, transfer_recorder: TransferRecorder
) -> None:
    client(root).get("/noted/small.txt")
    assert transfer_recorder.last.notes["user"] == "alice"
    assert "user=alice" in transfer_recorder.last.line()


def test_a_client_that_leaves_releases_the_file(
    root: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    disconnect_after(client(root), 65536, "/files/big.bin")
    record = transfer_recorder.last
    assert (record.outcome, record.bytes_sent) == ("aborted", 65536)


class Custom(flask.Response):
    pass


@pytest.mark.parametrize("response_class", [flask.Response, Custom])
def test_the_server_gets_its_own_file_wrapper(
    root: Path, no_leaked_files: LeakCheck, response_class: type[flask.Response]
) -> None:
    """What makes sendfile possible: Flask hands the server's wrapper back untouched."""
    app = flask_app.create_app(root)
    app.response_class = response_class
    closed: list[str] = []

    @app.after_request
    def on_close(response: flask.Response) -> flask.Response:
        path = flask.request.path
        response.call_on_close(lambda: closed.append(path))
        return response

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/files/big.bin",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.file_wrapper": FileWrapper,
    }
    statuses: list[str] = []
    result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        assert statuses == ["200 OK"]
        assert isinstance(result, FileWrapper)
        assert isinstance(result.filelike, FileStream)
        assert b"".join(result) == (root / "big.bin").read_bytes()
    finally:
        result.close()  # type: ignore[attr-defined]
    assert len(closed) == 1, "the response's call_on_close callbacks run when the server closes"


def test_send_file_returns_the_apps_response_class(root: Path) -> None:
    app = flask_app.create_app(root)
    app.response_class = Custom
    with app.test_request_context("/files/small.txt"):
        response = flask_app.send_file(root / "small.txt")
        try:
            assert isinstance(response, Custom) and isinstance(response, FileResponse)
        finally:
            response.close()


# -- under gunicorn ------------------------------------------------------------------
class TestUnderGunicorn(server_checks.UnderGunicorn):
    app = "flask_app:production()"

    def env(self, root: Path) -> dict[str, str]:
        return {"WSGIPIPE_TEST_ROOT": str(root)}


# -- docs/flask.md: its complete app and its test, run as written ----------------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "flask.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


@pytest.fixture
def doc_app(tmp_path: Path) -> Iterator[Path]:
    """docs/flask.md's app as filesapp.py; the wsgipipe logger restored after."""
    folder = tmp_path / "docapp"
    folder.mkdir()
    (folder / "filesapp.py").write_text(doc_blocks()[0], encoding="utf-8")
    logger = logging.getLogger("wsgipipe")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield folder
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_the_docs_example_passes_its_own_test(
    root: Path, doc_app: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    spec = importlib.util.spec_from_file_location("filesapp", doc_app / "filesapp.py")
    assert spec is not None and spec.loader is not None
    filesapp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filesapp)
    namespace: dict[str, object] = {"create_app": filesapp.create_app}
    exec(doc_blocks()[1], namespace)
    namespace["test_download_and_missing_file"](root, no_leaked_files, transfer_recorder)  # type: ignore[operator]


@pytest.mark.server
def test_the_docs_example_under_gunicorn(root: Path, doc_app: Path) -> None:
    with GunicornServer(f"filesapp:create_app({str(root)!r})", cwd=doc_app) as server:
        assert server_checks.get(server, "/files/big.bin").endswith((root / "big.bin").read_bytes())
        assert server_checks.get(server, "/files/nothing.bin").startswith(b"HTTP/1.1 404 ")
        assert server_checks.get(server, "/latest").startswith(b"HTTP/1.1 200 ")
        big = wait_for_transfer(server, "/files/big.bin")
        missing = wait_for_transfer(server, "/files/nothing.bin")
        wait_for_transfer(server, "/latest")
        log = server.log
    assert f"200 finished {SIZE}/{SIZE} B" in big and "via=sendfile" in big, big
    assert "404 finished 14/14 B" in missing, missing
    assert "wsgipipe.file_errors 404 for GET /files/nothing.bin: FileNotFoundError" in log


def test_a_hook_that_turns_the_response_into_a_304_closes_the_file_once(
    root: Path, no_leaked_files: LeakCheck
) -> None:
    app = flask_app.create_app(root)
    closed: list[int] = []

    @app.after_request
    def not_modified(response: flask.Response) -> flask.Response:
        response.call_on_close(lambda: closed.append(1))
        response.status_code = 304
        return response

    response = TestApp(app, lint=True).get("/files/big.bin", status=304)
    assert response.body == b""
    assert closed == [1]
