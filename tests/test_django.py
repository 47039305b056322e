"""wsgipipe.django: the test project tests/apps/django_site, in-process and under gunicorn."""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import FileWrapper

import pytest
import server_checks
from webtest import TestApp

from wsgipipe import FileStream, TransferLog
from wsgipipe.testing import (
    GunicornServer,
    LeakCheck,
    TransferRecorder,
    disconnect_after,
    wait_for_transfer,
)

APPS = Path(__file__).parent / "apps"
SIZE = 2 * 1024 * 1024

django = pytest.importorskip("django")
sys.path.insert(0, str(APPS))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.test import override_settings  # noqa: E402


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    (tmp_path / "small.txt").write_bytes(b"hello, django\n")
    with override_settings(FILES_ROOT=str(tmp_path)):
        yield tmp_path


def client() -> TestApp:
    return TestApp(TransferLog(WSGIHandler()), lint=True)


# -- file errors before Django's 500 ------------------------------------------------
@pytest.mark.parametrize(("url", "status"), server_checks.FILE_ERRORS)
def test_file_errors_in_views_get_their_status(root: Path, url: str, status: int) -> None:
    server_checks.check_error_answer(client().get(url, status=status), status, root)


def test_without_the_middleware_django_answers_500(root: Path) -> None:
    with override_settings(MIDDLEWARE=[]):
        response = client().get("/read/missing.bin", status=500)
    assert b"Server Error" in response.body


def test_hide_forbidden_answers_404(root: Path) -> None:
    with override_settings(WSGIPIPE_HIDE_FORBIDDEN=True):
        client().get("/forbidden", status=404)


def test_a_missing_file_is_logged_and_recorded(
    root: Path, transfer_recorder: TransferRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    client().get("/files/missing.bin", status=404)
    record = transfer_recorder.last
    assert (record.status, record.outcome) == (404, "finished")
    assert isinstance(record.error, FileNotFoundError)
    assert "404 for GET /files/missing.bin: FileNotFoundError" in caplog.text


def test_head_of_a_missing_file_is_an_empty_404(root: Path) -> None:
    response = client().head("/files/missing.bin", status=404)
    assert response.body == b""
    assert response.headers["Content-Length"] == str(len(b"404 Not Found\n"))


# -- FileResponse in Python (no file wrapper offered) --------------------------------
def test_file_response_serves_the_file_and_records_it(
    root: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    response = client().get("/files/big.bin")
    assert response.body == (root / "big.bin").read_bytes()
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["Accept-Ranges"] == "bytes"
    record = transfer_recorder.last
    assert (record.outcome, record.bytes_sent, record.length) == ("finished", SIZE, SIZE)


def test_ranges_and_conditions(root: Path) -> None:
    app = client()
    data = (root / "big.bin").read_bytes()
    part = app.get("/files/big.bin", headers={"Range": "bytes=100-199"}, status=206)
    assert part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    multi = app.get("/files/big.bin", headers={"Range": "bytes=0-9,1000-1009"}, status=206)
    assert multi.content_type == "multipart/byteranges"
    assert data[:10] in multi.body and data[1000:1010] in multi.body
    app.get("/files/small.txt", headers={"Range": "bytes=500-"}, status=416)
    etag = app.get("/files/small.txt").headers["ETag"]
    not_modified = app.get("/files/small.txt", headers={"If-None-Match": etag}, status=304)
    assert not_modified.body == b""
    assert "Content-Type" not in not_modified.headers
    app.get("/files/small.txt", headers={"If-Match": '"other"'}, status=412)


def test_head_sends_headers_only(root: Path, no_leaked_files: LeakCheck) -> None:
    response = client().head("/files/big.bin")
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.body == b""


def test_attachment_and_note(root: Path, transfer_recorder: TransferRecorder) -> None:
    disposition = client().get("/download/small.txt").headers["Content-Disposition"]
    assert "filename*=UTF-8''Rapport%20%C3%A9t%C3%A9.bin" in disposition
    client().get("/noted/small.txt")
    assert transfer_recorder.last.notes["user"] == "alice"


def test_a_client_that_leaves_releases_the_file(
    root: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    disconnect_after(client(), 65536, "/files/big.bin")
    record = transfer_recorder.last
    assert (record.outcome, record.bytes_sent) == ("aborted", 65536)


def test_gzip_middleware_replaces_the_body_and_gets_it_right(
    root: Path, no_leaked_files: LeakCheck
) -> None:
    response = _call("/gzip/big.bin", {"HTTP_ACCEPT_ENCODING": "gzip"})
    try:
        assert not isinstance(response.result, FileWrapper)  # the file is not what is sent
        assert gzip.decompress(b"".join(response.result)) == (root / "big.bin").read_bytes()
    finally:
        response.result.close()  # type: ignore[attr-defined]


# -- the zero-copy path: the server gets its own file wrapper ------------------------
class _Called:
    def __init__(self, path: str, extra: dict[str, str]) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.file_wrapper": FileWrapper,
            **extra,
        }
        self.result = WSGIHandler()(environ, self._start_response)

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc: object = None):  # type: ignore[no-untyped-def]
        self.status, self.headers = status, headers


def _call(path: str, extra: dict[str, str] | None = None) -> _Called:
    return _Called(path, extra or {})


@pytest.mark.parametrize(
    ("header", "start", "stop"), [(None, 0, SIZE), ("bytes=100000-299999", 100000, 300000)]
)
def test_the_server_gets_its_own_file_wrapper(
    root: Path, no_leaked_files: LeakCheck, header: str | None, start: int, stop: int
) -> None:
    finished: list[object] = []

    def on_finished(sender: object, **kwargs: object) -> None:
        finished.append(sender)

    request_finished.connect(on_finished)
    try:
        called = _call("/files/big.bin", {"HTTP_RANGE": header} if header else {})
        assert isinstance(called.result, FileWrapper)
        assert isinstance(called.result.filelike, FileStream)
        assert b"".join(called.result) == (root / "big.bin").read_bytes()[start:stop]
        called.result.close()
    finally:
        request_finished.disconnect(on_finished)
    assert finished, "closing the wrapper must close the Django response (request_finished)"


# -- under gunicorn -------------------------------------------------------------------
class TestUnderGunicorn(server_checks.UnderGunicorn):
    app = "django_site.wsgi:application"

    def env(self, root: Path) -> dict[str, str]:
        return {"WSGIPIPE_TEST_ROOT": str(root), "DJANGO_SETTINGS_MODULE": "django_site.settings"}


# -- docs/django.md: its complete project, run as written under gunicorn -----------------
DOC = Path(__file__).resolve().parent.parent / "docs" / "django.md"


def write_doc_project(folder: Path) -> None:
    """Each python block of docs/django.md starts with ``# mysite/<file>.py``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    (folder / "mysite").mkdir()
    (folder / "mysite" / "__init__.py").write_text("")
    for block in blocks:
        name = re.match(r"# (mysite/\w+\.py)", block)
        assert name is not None, block[:80]
        (folder / name.group(1)).write_text(block, encoding="utf-8")


@pytest.mark.server
def test_the_docs_project_under_gunicorn(root: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_doc_project(site)
    env = {
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "DJANGO_SECRET_KEY": "test-only",
        "FILES_ROOT": str(root),
    }
    with GunicornServer("mysite.wsgi:application", cwd=site, env=env) as server:
        assert server_checks.get(server, "/files/big.bin?user=ann").endswith(
            (root / "big.bin").read_bytes()
        )
        assert server_checks.get(server, "/files/nothing.bin").startswith(b"HTTP/1.1 404 ")
        assert server_checks.get(server, "/files/..").startswith(b"HTTP/1.1 404 ")
        ranged = server_checks.get(server, "/files/big.bin", {"Range": "bytes=100000-1099999"})
        assert ranged.startswith(b"HTTP/1.1 206 ")
        big = wait_for_transfer(server, "/files/big.bin")
        part = wait_for_transfer(server, "/files/big.bin", count=2)
        missing = wait_for_transfer(server, "/files/nothing.bin")
        log = server.log
        assert server.open_files(root) == []
    assert re.search(rf"200 finished {SIZE}/{SIZE} B \S+ user=ann via=sendfile", big), big
    assert "206 finished 1000000/1000000 B" in part and "via=sendfile" in part, part
    assert "404 finished 14/14 B" in missing, missing
    assert "wsgipipe.file_errors 404 for GET /files/nothing.bin: FileNotFoundError" in log
