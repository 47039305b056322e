"""The examples of docs/testing.md, as real tests.

Every ``python`` block of docs/testing.md appears in this file verbatim
(apart from its import lines, which are gathered at the top), and
:func:`test_docs_show_this_code` keeps it that way.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from flask import Flask, Response, abort
from webtest import TestApp
from werkzeug.security import safe_join

from wsgipipe import Delay, FileErrors, FileStream, IdleTimeout, Tee, TransferLog, sinks
from wsgipipe.testing import (
    LeakedFiles,
    TransferRecorder,
    disconnect_after,
    hang_up_after,
    no_leaked_files,
    stalled_client,
)

DOCS = Path(__file__).parent.parent / "docs" / "testing.md"


# -- conftest.py --------------------------------------------------------------
@pytest.fixture
def files_dir(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(1_000_000))
    return tmp_path


def test_a_block_that_closes_its_files(tmp_path):
    with no_leaked_files(tmp_path):  # raises LeakedFiles if the block leaked
        (tmp_path / "notes.txt").write_text("closed on the way out")


# -- a plain WSGI app ---------------------------------------------------------
def make_app(root, *tee_sinks):
    def files(environ, start_response):
        path = safe_join(str(root), environ["PATH_INFO"].lstrip("/"))
        if path is None:
            raise FileNotFoundError(environ["PATH_INFO"])
        stream = FileStream(path)  # FileErrors turns a missing file into a 404
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(stream.size)),
        ]
        start_response("200 OK", headers)
        return stream

    return TransferLog(Tee(FileErrors(files), *tee_sinks))


def test_file_is_closed_when_the_client_disconnects(files_dir, no_leaked_files, transfer_recorder):
    app = TestApp(make_app(files_dir), lint=True)
    result = disconnect_after(app, 65536, "/big.bin")
    assert result.received == (files_dir / "big.bin").read_bytes()[:65536]
    transfer = transfer_recorder.last
    assert (transfer.outcome, transfer.bytes_sent) == ("aborted", 65536)
    # If big.bin were still open, no_leaked_files would fail this test.


def test_tee_captured_exactly_what_was_sent(files_dir, no_leaked_files, transfer_recorder):
    capture = sinks.Capture()
    app = TestApp(make_app(files_dir, capture, sinks.Digest()), lint=True)
    response = app.get("/big.bin")
    assert bytes(capture.last.body) == response.body == (files_dir / "big.bin").read_bytes()
    assert capture.last.outcome == "finished"
    sha256 = hashlib.sha256(response.body).hexdigest()
    assert transfer_recorder.last.notes["sha256"] == sha256


def test_missing_file_is_a_clean_404(files_dir, no_leaked_files):
    app = TestApp(make_app(files_dir), lint=True)
    app.get("/nothing-here.bin", status=404)


# -- a Flask app --------------------------------------------------------------
def create_app(root, *tee_sinks):
    app = Flask(__name__)

    @app.get("/files/<name>")
    def send(name):
        path = safe_join(str(root), name)
        if path is None:
            abort(404)
        stream = FileStream(path)
        try:
            size = stream.size  # opens the file
        except OSError:
            abort(404)
        # direct_passthrough hands the stream itself to the server, so the
        # server's close() reaches it (and gunicorn can still use sendfile).
        return Response(
            stream,
            mimetype="application/octet-stream",
            headers={"Content-Length": str(size)},
            direct_passthrough=True,
        )

    app.wsgi_app = TransferLog(Tee(app.wsgi_app, *tee_sinks))
    return app


def test_flask_file_is_closed_when_the_client_disconnects(
    files_dir, no_leaked_files, transfer_recorder
):
    client = TestApp(create_app(files_dir), lint=True)
    result = disconnect_after(client, 65536, "/files/big.bin")
    assert result.status == "200 OK"
    transfer = transfer_recorder.last
    assert (transfer.outcome, transfer.bytes_sent) == ("aborted", 65536)


def test_flask_tee_captured_exactly_what_was_sent(files_dir, no_leaked_files):
    capture = sinks.Capture()
    client = TestApp(create_app(files_dir, capture), lint=True)
    response = client.get("/files/big.bin")
    assert bytes(capture.last.body) == response.body == (files_dir / "big.bin").read_bytes()
    assert capture.last.sha256() == hashlib.sha256(response.body).hexdigest()


# -- what a leak looks like ---------------------------------------------------
def make_leaky_app(path):
    def leaky(environ, start_response):
        f = open(path, "rb")  # noqa: SIM115 - the leak being shown
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def chunks():
            while data := f.read(65536):
                yield data
            f.close()  # never reached when the client leaves early

        return chunks()

    return leaky


def test_the_leak_is_caught(files_dir):
    app = make_leaky_app(files_dir / "big.bin")
    with pytest.raises(LeakedFiles) as leak, no_leaked_files():
        disconnect_after(app, 65536)
    assert leak.value.paths == [str(files_dir / "big.bin")]


# -- simulated clients ------------------------------------------------------
def serve_file(path):
    def app(environ, start_response):
        stream = FileStream(path)
        start_response("200 OK", [("Content-Length", str(stream.size))])
        return stream

    return app


def test_stalled_and_departed_clients(files_dir, no_leaked_files):
    recorder = TransferRecorder()
    app = serve_file(files_dir / "big.bin")

    result = stalled_client(recorder.wrap(IdleTimeout(app, 0.3)), timeout=3)
    assert result.release_delay < 1.0
    assert recorder.last.reason == "idle timeout 0.3s"

    result = hang_up_after(recorder.wrap(Delay(app, 1.0)), 1)
    assert result.release_delay < 0.5  # at once, not at the next write a second later
    assert recorder.last.reason == "client disconnected"


# -- the docs stay true -------------------------------------------------------
def test_docs_show_this_code():
    source = Path(__file__).read_text()
    text = re.sub(r"<!-- not run.*?-->\n```python\n.*?```", "", DOCS.read_text(), flags=re.DOTALL)
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 8, "docs/testing.md lost its examples"
    for block in blocks:
        lines = [line for line in block.splitlines() if not _is_import(line)]
        code = "\n".join(lines).strip("\n")
        assert code in source, f"docs/testing.md shows code this file does not run:\n{code}"


def _is_import(line):
    return re.match(r"(from \S+ )?import ", line) is not None or line.startswith("# ")
