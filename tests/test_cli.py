"""``wsgipipe serve DIR``: arguments, loud configuration errors, and a real run."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import runpy
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from webtest import TestApp

from wsgipipe import ConfigurationError, IdleTimeout
from wsgipipe.__main__ import main, parser, settings_from
from wsgipipe._stack import folder_app, parse_tee, stack
from wsgipipe.testing import open_files, transfer_lines, wait_until

REPO = Path(__file__).resolve().parent.parent


def test_defaults_match_gunicorn_conf() -> None:
    """The CLI and gunicorn.conf.py must recommend the same deployment."""
    from wsgipipe.gunicorn import SETTINGS

    conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    for key, value in SETTINGS.items():
        if key != "bind":
            assert conf[key] == value, key
    args = parser().parse_args(["serve", "."])
    cli = settings_from(args)
    for key in ("workers", "threads", "worker_class", "timeout"):
        assert cli[key] == SETTINGS[key], key


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "/no/such/dir"], "not a directory"),
        (["serve", ".", "--tee", "bogus"], "unknown tee sink"),
        (["serve", ".", "--limit-rate", "fast"], "not a rate"),
        (["serve", ".", "--workers", "0"], "must be at least 1"),
        (["serve", ".", "--worker-class", "eventlet"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_with_a_readable_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_import_wsgipipe_never_imports_gunicorn() -> None:
    code = (
        "import sys, wsgipipe, wsgipipe._stack, wsgipipe.__main__; print('gunicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, wsgipipe\n")
    log = tmp_path / "server.log"
    env = dict(os.environ, HOME=str(tmp_path), PYTHONUNBUFFERED="1")  # control socket in tmp
    cmd = [sys.executable, "-m", "wsgipipe", "serve", str(root), "--bind", "127.0.0.1:0"]
    cmd += ["--workers", "1", "--threads", "2", "--idle-timeout", "1", "--tee", "sha256"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
        try:
            assert wait_until(lambda: "Booting worker" in log.read_text(), 20), log.read_text()
            match = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
            assert match is not None
            yield match.group(1), root, log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


@pytest.mark.server
def test_serve_runs_gunicorn_with_the_stack(cli_server: tuple[str, Path, Path]) -> None:
    url, root, log = cli_server
    with urllib.request.urlopen(f"{url}/hello.txt", timeout=10) as response:
        assert response.read() == b"hello, wsgipipe\n"
        assert response.headers["Content-Type"].startswith("text/plain")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{url}/missing.txt", timeout=10)
    info.value.close()
    assert info.value.code == 404
    digest = hashlib.sha256(b"hello, wsgipipe\n").hexdigest()
    assert wait_until(lambda: f"sha256={digest}" in log.read_text(), 5), log.read_text()
    text = log.read_text()
    (line,) = transfer_lines(text, "/hello.txt")
    assert line.startswith("GET /hello.txt 200 finished 16/16 B")
    assert "Using worker: wsgipipe.gunicorn.OffloadWorker" in text
    pids = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)]
    assert pids and all(open_files(pid, root) == [] for pid in pids)


class TestServeStack:
    """The stack ``wsgipipe serve`` runs, in-process."""

    def test_parse_tee(self, tmp_path: Path) -> None:
        found = parse_tee(f"stdout, sha256,dir:{tmp_path / 'copies'},,")
        assert [type(s).__name__ for s in found] == ["StreamSink", "Digest", "DirectorySink"]
        assert (tmp_path / "copies").is_dir()
        assert parse_tee("") == []
        with pytest.raises(ConfigurationError, match="unknown tee sink 'nope'"):
            parse_tee("nope")

    def test_folder_app_serves_and_logs(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (tmp_path / "a.txt").write_bytes(b"abc\n")
        caplog.set_level(logging.INFO, logger="wsgipipe")
        app = TestApp(folder_app(tmp_path, tee="sha256", limit_rate="1M"), lint=True)
        assert app.get("/a.txt").body == b"abc\n"
        assert app.get("/missing", status=404).body == b"404 Not Found\n"
        records = [r.getMessage() for r in caplog.records if r.name == "wsgipipe.transfer_log"]
        digest = hashlib.sha256(b"abc\n").hexdigest()
        assert any(r.startswith("GET /a.txt 200 finished 4/4 B") and digest in r for r in records)
        assert any(r.startswith("GET /missing 404") for r in records)
        assert open_files("self", tmp_path) == []

    def test_idle_timeout_zero_is_off(self, tmp_path: Path) -> None:
        assert not isinstance(stack(folder_app(tmp_path), idle_timeout=0).app, IdleTimeout)  # type: ignore[attr-defined]
        assert isinstance(stack(folder_app(tmp_path), idle_timeout=5).app, IdleTimeout)  # type: ignore[attr-defined]
