"""The README's snippets, run for real against a temporary root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, Static, Tee, TransferLog, sinks
from wsgipipe.testing import LeakCheck, TransferRecorder, disconnect_after


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
