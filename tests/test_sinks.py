"""Ready sinks: what they keep, how they report, how they fail at configuration."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import ConfigurationError, Tee, Transfer, TransferLog, sinks
from wsgipipe.testing import disconnect_after, download

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def chunks_app(status: str = "200 OK") -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"abc", b"def"]

    return app


def call(app: WSGIApplication, path: str = "/x", keep: int | None = None) -> None:
    """Serve one request in-process; with ``keep``, the client hangs up after that many bytes."""
    if keep is None:
        download(app, path)
    else:
        disconnect_after(app, keep, path)


def test_directory_sink_keeps_one_file_per_response(tmp_path: Path) -> None:
    app = Tee(chunks_app(), sinks.DirectorySink(tmp_path / "copies"))
    call(app, "/a/b.txt")
    call(app, "/c.txt")
    files = sorted((tmp_path / "copies").iterdir())
    assert [f.read_bytes() for f in files] == [b"abcdef", b"abcdef"]
    assert files[0].name.endswith("-a_b.txt.body")


def test_directory_sink_marks_an_aborted_copy_partial(tmp_path: Path) -> None:
    call(Tee(chunks_app(), sinks.DirectorySink(tmp_path)), keep=3)
    [copy] = tmp_path.iterdir()
    assert copy.name.endswith(".body.partial")
    assert copy.read_bytes() == b"abc", "only what the server accepted"


def test_directory_sink_refuses_a_file_as_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="cannot use"):
        sinks.DirectorySink(tmp_path / "file")


def test_digest_of_a_206_says_range_and_of_an_abort_partial() -> None:
    done: list[Transfer] = []
    digest = sinks.Digest("sha256")
    call(TransferLog(Tee(chunks_app("206 Partial Content"), digest), on_done=done.append))
    expected = hashlib.sha256(b"abcdef").hexdigest()
    assert done[-1].notes["sha256"] == f"{expected}(range)"
    call(TransferLog(Tee(chunks_app(), digest), on_done=done.append), keep=3)
    assert digest.last is not None and digest.last.scope == "partial"
    assert done[-1].notes["sha256"].endswith("(partial)")


def test_digest_of_an_empty_body_is_reported() -> None:
    def empty(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []

    digest = sinks.Digest("md5")
    TestApp(Tee(empty, digest), lint=True).get("/")
    assert digest.last is not None and digest.last.hexdigest() == hashlib.md5(b"").hexdigest()


def test_unknown_digest_algorithm_fails_at_configuration() -> None:
    with pytest.raises(ConfigurationError, match="unknown hash"):
        sinks.Digest("sha-nope")


def test_stdout_sink_writes_the_body(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    call(Tee(chunks_app(), sinks.stdout()))
    assert capsysbinary.readouterr().out == b"abcdef"


def test_capture_records_each_response() -> None:
    capture = sinks.Capture()
    with pytest.raises(LookupError):
        _ = capture.last
    app = Tee(chunks_app(), capture)
    call(app, "/one")
    call(app, "/two", keep=3)
    assert [(c.path, bytes(c.body), c.outcome) for c in capture.responses] == [
        ("/one", b"abcdef", "finished"),
        ("/two", b"abc", "aborted"),
    ]
    assert capture.responses[0].sha256() == hashlib.sha256(b"abcdef").hexdigest()
