"""log_to_stderr and JsonFormatter: the transfer lines reach a handler, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, JsonFormatter, Tee, TransferLog, log_to_stderr, sinks
from wsgipipe.testing import (
    GunicornServer,
    TransferRecorder,
    disconnect_after,
    raw_request,
    wait_until,
)

SIZE = 300_000


@pytest.fixture(autouse=True)
def restore_wsgipipe_logger() -> Iterator[None]:
    """Each test starts and ends with the wsgipipe logger as the suite had it."""
    logger = logging.getLogger("wsgipipe")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            logger.removeHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def file_app(path: Path):  # type: ignore[no-untyped-def]
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        stream = FileStream(path if environ["PATH_INFO"] == "/big.bin" else path / "missing")
        headers = [("Content-Type", "application/octet-stream")]
        start_response("200 OK", [*headers, ("Content-Length", str(stream.size))])
        return stream

    return app


class _Root(logging.Handler):
    """Stands for the root handler a user's app or logging.basicConfig installs."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_log_to_stderr_prints_each_transfer_line_once(big: Path) -> None:
    root = _Root()
    logging.getLogger().addHandler(root)
    try:
        out = io.StringIO()
        log_to_stderr(stream=out)
        TestApp(TransferLog(file_app(big)), lint=True).get("/big.bin")
    finally:
        logging.getLogger().removeHandler(root)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert f"wsgipipe.transfer_log GET /big.bin 200 finished {SIZE}/{SIZE} B" in lines[0]
    assert not [m for m in root.messages if "/big.bin" in m], "the line also reached root"


def test_a_second_call_replaces_the_handler(big: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    log_to_stderr(stream=first)
    handler = log_to_stderr(stream=second, json=True)
    ours = [h for h in logging.getLogger("wsgipipe").handlers if type(h) is type(handler)]
    assert ours == [handler]
    TestApp(TransferLog(file_app(big)), lint=True).get("/big.bin")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["outcome"] == "finished"


def test_level_is_honoured(big: Path) -> None:
    out = io.StringIO()
    log_to_stderr("WARNING", stream=out)
    TestApp(TransferLog(file_app(big)), lint=True).get("/big.bin")
    assert out.getvalue() == ""  # a finished transfer is an INFO line


def test_json_line_has_the_transfer_fields(big: Path, transfer_recorder: TransferRecorder) -> None:
    out = io.StringIO()
    log_to_stderr(stream=out, json=True)
    app = TransferLog(FileErrors(Tee(file_app(big), sinks.Digest("sha256"))))
    disconnect_after(TestApp(app, lint=True), 65536, "/big.bin")
    data = json.loads(out.getvalue())
    record = transfer_recorder.last
    assert data["logger"] == "wsgipipe.transfer_log"
    assert data["level"] == "INFO"
    assert (data["method"], data["path"], data["status"]) == ("GET", "/big.bin", 200)
    assert (data["outcome"], data["bytes_sent"], data["length"]) == ("aborted", 65536, SIZE)
    assert data["duration"] == pytest.approx(record.duration, abs=1e-6)
    assert data["via"] == "python"
    assert data["reason"] == record.reason
    assert set(data["notes"]) == {"sha256"}  # via has its own key
    assert data["error"] is None


def test_json_for_other_records_keeps_message_and_exception(big: Path) -> None:
    out = io.StringIO()
    log_to_stderr(stream=out, json=True)
    app = TestApp(FileErrors(file_app(big)), lint=True)
    app.get("/missing.bin", status=404)
    data = json.loads(out.getvalue())
    assert data["logger"] == "wsgipipe.file_errors"
    assert data["message"].startswith("404 for GET /missing.bin")
    assert "method" not in data


def test_json_formatter_renders_a_traceback() -> None:
    try:
        raise OSError("disk on fire")
    except OSError:
        record = logging.LogRecord("wsgipipe.x", logging.ERROR, __file__, 1, "boom", (), None)
        record.exc_info = __import__("sys").exc_info()
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "boom"
    assert "OSError: disk on fire" in data["exception"]


JSON_APP = """
    from wsgipipe import FileErrors, FileStream, TransferLog, log_to_stderr

    def download(environ, start_response):
        stream = FileStream({path!r})
        start_response("200 OK", [("Content-Length", str(stream.size))])
        return stream

    log_to_stderr(json=True)
    app = TransferLog(FileErrors(download))
"""


@pytest.mark.server
def test_json_lines_under_plain_gunicorn(tmp_path: Path, big: Path) -> None:
    (tmp_path / "json_app.py").write_text(textwrap.dedent(JSON_APP.format(path=str(big))))
    with GunicornServer("json_app:app", cwd=tmp_path) as server:
        with raw_request(server, "/big.bin", headers={"Connection": "close"}) as sock:
            while sock.recv(1 << 20):
                pass  # to the end: the server closes after the body
        assert wait_until(lambda: '"outcome": "finished"' in server.log)
        line = next(ln for ln in server.log.splitlines() if '"path": "/big.bin"' in ln)
    data = json.loads(line)
    assert (data["status"], data["bytes_sent"], data["length"]) == (200, SIZE, SIZE)
    assert data["via"] == "sendfile"


def test_json_formatter_from_a_logconfig_dict(big: Path) -> None:
    """The form docs/deployment.md gives for gunicorn's logconfig_dict."""
    out = io.StringIO()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "wsgipipe.JsonFormatter"}},
            "handlers": {
                "out": {"class": "logging.StreamHandler", "formatter": "json", "stream": out}
            },
            "loggers": {"wsgipipe": {"handlers": ["out"], "level": "INFO", "propagate": False}},
        }
    )
    TestApp(TransferLog(file_app(big)), lint=True).get("/big.bin")
    data = json.loads(out.getvalue())
    assert (data["path"], data["bytes_sent"]) == ("/big.bin", SIZE)
