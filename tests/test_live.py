"""The live transfers page: slot files, the JSON, its protection, and a real browser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webtest import TestApp

from wsgipipe import ConfigurationError, stack, static_app
from wsgipipe._live import Live
from wsgipipe._live_page import LivePage
from wsgipipe._live_slots import SlotWriter, read_all, read_slot
from wsgipipe.testing import GunicornServer, raw_request, wait_until

REPO = Path(__file__).resolve().parents[1]
SIZE = 1024 * 1024
TOKEN = "s3cret-token-of-some-length"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    public.mkdir()
    (public / "file.bin").write_bytes(os.urandom(SIZE))
    return public


class TestSlots:
    def test_round_trip(self, tmp_path: Path) -> None:
        writer = SlotWriter(tmp_path, os.getpid())
        try:
            writer.write(json.dumps({"beat": time.time(), "n": 1}).encode())
            writer.write(json.dumps({"beat": time.time(), "n": 2}).encode())
            found = read_slot(writer.path)
            assert found is not None and found["n"] == 2
        finally:
            writer.close()

    def test_a_reader_never_sees_a_half_written_payload(self, tmp_path: Path) -> None:
        writer = SlotWriter(tmp_path, os.getpid())
        stop = threading.Event()

        def write_forever() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                # Sizes vary, so a torn read would mix two payloads.
                writer.write(json.dumps({"n": n, "pad": "x" * (n % 5000)}).encode())

        thread = threading.Thread(target=write_forever)
        thread.start()
        try:
            seen = [read_slot(writer.path) for _ in range(300)]
        finally:
            stop.set()
            thread.join(5)
            writer.close()
        good = [s for s in seen if s is not None]
        assert len(good) > 250  # retries make a miss rare
        assert all(len(s["pad"]) == s["n"] % 5000 for s in good)

    def test_an_odd_sequence_is_a_write_in_progress(self, tmp_path: Path) -> None:
        path = tmp_path / "worker-1.slot"
        path.write_bytes(b"WPL1" + (3).to_bytes(8, "little") + bytes(8) + b"{}")
        assert read_slot(path) is None

    def test_dead_workers_keep_their_endings_for_a_while_then_go(self, tmp_path: Path) -> None:
        dead = _dead_pid()
        writer = SlotWriter(tmp_path, dead)
        try:
            payload = {"pid": dead, "beat": time.time(), "flights": [{"path": "/x"}], "endings": []}
            writer.write(json.dumps(payload).encode())
            [found] = read_all(tmp_path, forget_after=60)
            assert found["alive"] is False
            payload["beat"] = time.time() - 120
            writer.write(json.dumps(payload).encode())
            assert read_all(tmp_path, forget_after=60) == []
            assert not writer.path.exists()
        finally:
            writer.close()


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def _start(status: str, headers: object, exc_info: object = None) -> object:
    return lambda data: None


class TestInProcess:
    def test_in_flight_then_ended(self, root: Path, tmp_path: Path) -> None:
        live = Live(tmp_path / "live", stalled_after=0.2)
        app = stack(static_app(root), live=live)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/file.bin", "REMOTE_ADDR": "10.1.2.3"}
        body = app(environ, _start)  # type: ignore[arg-type]
        chunks = iter(body)
        next(chunks)
        next(chunks)
        live.publish()
        [flight] = live.snapshot()["in_flight"]
        assert flight["path"] == "/file.bin" and flight["client"] == "10.1.2.3"
        assert flight["length"] == SIZE and 0 < flight["bytes"] < SIZE
        assert flight["stalled"] is False
        time.sleep(0.3)
        live.publish()
        assert live.snapshot()["in_flight"][0]["stalled"] is True  # no progress for 0.3 s
        body.close()  # type: ignore[attr-defined]
        live.publish()
        snapshot = live.snapshot()
        assert snapshot["in_flight"] == []
        [ending] = snapshot["endings"]
        assert ending["outcome"] == "aborted" and ending["path"] == "/file.bin"
        assert snapshot["workers"] == [os.getpid()]

    def test_off_by_default(self, root: Path) -> None:
        app = TestApp(stack(static_app(root)), lint=True)
        app.get("/-/transfers", status=404)
        app.get("/-/transfers.json", status=404)

    def test_loopback_only_by_default(self, root: Path, tmp_path: Path) -> None:
        app = stack(static_app(root), live=Live(tmp_path / "live"))
        local = TestApp(app, lint=True, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        TestApp(app, lint=True, extra_environ={"REMOTE_ADDR": "::1"}).get("/-/transfers.json")
        page = local.get("/-/transfers")
        assert "Content-Security-Policy" in page.headers
        assert '<script src="transfers.js"' in page.text
        assert 'fetch("transfers.json"' in local.get("/-/transfers.js").text
        data = local.get("/-/transfers.json").json
        assert set(data) >= {"in_flight", "endings", "workers"}
        remote = TestApp(app, lint=True, extra_environ={"REMOTE_ADDR": "192.0.2.7"})
        for path in ("/-/transfers", "/-/transfers.json", "/-/transfers.js"):
            assert "loopback" in remote.get(path, status=403).text
        TestApp(app, lint=True, extra_environ={"REMOTE_ADDR": ""}).get(
            "/-/transfers.json", status=403
        )

    def test_token(self, root: Path, tmp_path: Path) -> None:
        app = stack(static_app(root), live=Live(tmp_path / "live"), live_token=TOKEN)
        remote = TestApp(app, lint=True, extra_environ={"REMOTE_ADDR": "192.0.2.7"})
        remote.get("/-/transfers.json", status=403)
        remote.get("/-/transfers.json", headers={"Authorization": "Bearer nope"}, status=403)
        remote.get("/-/transfers.json", headers={"Authorization": f"Bearer {TOKEN}"})
        page = remote.get(f"/-/transfers?token={TOKEN}")
        assert "HttpOnly" in page.headers["Set-Cookie"]
        remote.get("/-/transfers.json")  # the cookie the page set
        remote.reset()
        remote.get("/-/transfers.json", status=403)
        # With a token, loopback is not enough either.
        TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"}).get(
            "/-/transfers.json", status=403
        )

    def test_short_token_is_refused_at_configuration(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="16 characters"):
            LivePage(Live(tmp_path), token="short")


# -- a real gunicorn with 2 workers, and a real browser -------------------------------

BIG = 2 * 1024 * 1024
RATE = 256 * 1024
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[GunicornServer]:
    public = tmp_path / "public"
    public.mkdir()
    (public / "big.bin").write_bytes(os.urandom(BIG))
    (public / "video.mp4").write_bytes(os.urandom(64 * 1024 * 1024 // 4))
    (public / "small.txt").write_bytes(b"hello\n" * 100)
    (public / "big.html").write_bytes(b"<p>pre-made</p>\n")
    env = {
        "WSGIPIPE_ROOT": str(public),
        "WSGIPIPE_LIVE": "1",
        "WSGIPIPE_LIVE_DIR": str(tmp_path / "live"),
        "WSGIPIPE_MIN_RATE": "0",
    }
    with GunicornServer(
        "examples.app:app", workers=2, threads=4, cwd=REPO, env=env, config="gunicorn.conf.py"
    ) as server:
        yield server


class SlowReader(threading.Thread):
    """Reads a throttled download to its end, in the background."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.received = 0

    def run(self) -> None:
        with self.sock:
            while chunk := self.sock.recv(65536):
                self.received += len(chunk)


def browser(tmp_path: Path) -> Any:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromium-driver are not installed (.ci/system-deps, as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in [*CHROME_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def rows(page: Any, kind: str) -> list[dict[str, str]]:
    found = page.execute_script(
        "return Array.from(document.querySelectorAll('tr.' + arguments[0]))"
        ".map(r => Object.assign({text: r.innerText, cls: r.className}, r.dataset));",
        kind,
    )
    return list(found)


@pytest.mark.server
def test_page_in_headless_chromium(live_server: GunicornServer, tmp_path: Path) -> None:
    page = browser(tmp_path)
    stalled = raw_request(live_server, "/video.mp4")  # reads nothing
    try:
        for _ in range(3):
            with raw_request(live_server, "/small.txt", headers={"Connection": "close"}) as sock:
                while sock.recv(65536):
                    pass
        with raw_request(live_server, "/video.mp4") as sock:
            sock.recv(1000)  # and leaves: an abort
        slow = SlowReader(raw_request(live_server, f"/limit/big.bin?rate={RATE}", timeout=30))
        slow.start()
        page.get(live_server.url + "/-/transfers")

        def progress() -> list[dict[str, str]]:
            return [r for r in rows(page, "flight") if r["path"] == "/limit/big.bin"]

        assert wait_until(progress, 10, 0.2), page.page_source
        first = int(progress()[0]["bytes"])
        assert wait_until(lambda: progress() and int(progress()[0]["bytes"]) > first, 5, 0.2)
        assert "/ 2.0 MiB" in progress()[0]["text"]
        if wait_until(lambda: any(r["cls"].endswith("stalled") for r in rows(page, "flight")), 8):
            screenshot(page, tmp_path)  # the picture docs/operations.md shows
        slow.join(20)
        assert slow.received > BIG

        def finished() -> list[dict[str, str]]:
            return [
                r
                for r in rows(page, "ending")
                if r["path"] == "/limit/big.bin" and r["outcome"] == "finished"
            ]

        assert wait_until(finished, 5, 0.2), page.page_source
        assert not progress()
        outcomes = {(r["path"], r["outcome"]) for r in rows(page, "ending")}
        assert ("/small.txt", "finished") in outcomes
        assert ("/video.mp4", "aborted") in outcomes
        shown = page.execute_script("return document.getElementById('status').textContent")
        pids = [int(p) for p in shown.split("workers ")[1].split(" ")[0].split(",") if p]
        assert pids and set(pids) <= set(live_server.worker_pids())
    finally:
        stalled.close()
        page.quit()


def screenshot(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "transfers.png"
    page.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("WSGIPIPE_UPDATE_SCREENSHOT") == "1":
        shutil.copy(path, REPO / "docs" / "img" / "transfers.png")


def test_an_unwritable_directory_never_fails_a_download(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    app = TestApp(stack(static_app(root), live=Live(blocker / "live")), lint=True)
    assert len(app.get("/file.bin").body) == SIZE
    assert "cannot write a slot file" in caplog.text
