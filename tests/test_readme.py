"""The README's snippets, run for real against a temporary root."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, Static, Tee, TransferLog, sinks
from wsgipipe.testing import (
    GunicornServer,
    LeakCheck,
    TransferRecorder,
    disconnect_after,
    raw_request,
    wait_for_transfer,
)

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def public(tmp_path: Path) -> Path:
    (tmp_path / "big.bin").write_bytes(os.urandom(300_000))
    return tmp_path


def test_ten_lines(public: Path, transfer_recorder: TransferRecorder) -> None:
    def download(environ, start_response):  # type: ignore[no-untyped-def]
        stream = FileStream(public / "big.bin")
        start_response(
            "200 OK",
            [("Content-Type", "application/pdf"), ("Content-Length", str(stream.size))],
        )
        return stream

    app = TransferLog(FileErrors(Tee(download, sinks.Digest("sha256"))))
    body = TestApp(app, lint=True).get("/report.pdf").body
    record = transfer_recorder.last
    assert (record.outcome, record.bytes_sent) == ("finished", 300_000)
    assert record.notes["sha256"] == hashlib.sha256(body).hexdigest()
    assert record.notes["via"] == "python"


def test_testing_your_app(
    public: Path, no_leaked_files: LeakCheck, transfer_recorder: TransferRecorder
) -> None:
    app = TransferLog(FileErrors(Static(public, max_age=3600)))
    disconnect_after(app, 65536, "/big.bin")
    assert transfer_recorder.last.outcome == "aborted"


def readme_block(heading: str) -> str:
    """The first ``python`` block under ``## heading`` in README.md."""
    section = README.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {heading!r}"
    return match.group(1)


@pytest.mark.server
@pytest.mark.parametrize("tee", [True, False], ids=["as-written", "tee-dropped"])
def test_ten_lines_print_their_line_under_plain_gunicorn(
    public: Path, tmp_path: Path, tee: bool
) -> None:
    """Run as written, with nothing but ``gunicorn module:app``: the line must appear."""
    code = readme_block("Ten lines").replace("/srv/files/report.pdf", str(public / "big.bin"))
    if not tee:  # "Drop the Tee and the same response goes through gunicorn's sendfile"
        code = code.replace('Tee(download, sinks.Digest("sha256"))', "download")
    (tmp_path / "ten_lines.py").write_text(code, encoding="utf-8")
    with GunicornServer("ten_lines:app", cwd=tmp_path) as server:
        with raw_request(server, "/report.pdf", headers={"Connection": "close"}) as sock:
            sock.settimeout(10)
            while sock.recv(1 << 20):
                pass
        line = wait_for_transfer(server, "/report.pdf")
    assert "GET /report.pdf 200 finished 300000/300000 B" in line, line
    if tee:
        digest = hashlib.sha256((public / "big.bin").read_bytes()).hexdigest()
        assert f" sha256={digest}" in line and " via=python" in line, line
    else:
        assert "via=sendfile" in line, line
