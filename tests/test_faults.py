"""Fault injection under a real gunicorn with real files.

Each case breaks something while a download is running (the file, a sink,
the source, the worker, the server) and then checks the same three things:
no descriptor is left open (``/proc/<pid>/fd``), the transfer line says how
it really ended, and the server serves the next request.

The app is ``tests/apps/lifecycle_app.py``. When the tests run as root, gunicorn
runs without CAP_DAC_OVERRIDE so that taking a file's permission away means
something (root reads any file).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_checks import fetch

from wsgipipe.testing import (
    GunicornServer,
    open_files,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

pytestmark = pytest.mark.server

TESTS = Path(__file__).parent
SIZE = 32 * 1024 * 1024  # more than loopback buffers hold: the file is read while we act
HEAD_START = 256 * 1024
TIMEOUT = 5.0


class WithoutDacOverride(GunicornServer):
    """gunicorn without the capability that lets root read any file.

    As root, ``chmod 0`` would change nothing; ``setpriv`` drops
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH so permissions apply again.
    """

    def command(self) -> list[str]:
        command = super().command()
        if os.geteuid() != 0:
            return command
        drop = "-dac_override,-dac_read_search"
        return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *command]


def _can_remove_permission() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


@dataclass
class Served:
    process: GunicornServer
    root: Path
    content: bytes

    def make(self, name: str, size: int = SIZE) -> Path:
        path = self.root / name
        path.write_bytes(self.content[:size])
        path.chmod(0o644)
        return path

    def transfers(self, name: str) -> list[str]:
        """Transfer lines for ``/<route>/<name>`` (each case uses its own name)."""
        found = transfer_lines(self.process.log)
        return [line for line in found if line.split(" ", 2)[1].endswith(f"/{name}")]

    def line(self, name: str) -> str:
        """The last transfer line for ``name``, once it is written."""
        assert wait_until(lambda: self.transfers(name), TIMEOUT), self.process.log[-3000:]
        return self.transfers(name)[-1]

    def clean(self) -> bool:
        """No worker holds a file under root (deleted files included)."""
        return wait_until(lambda: not self.process.open_files(self.root), TIMEOUT)

    def serves_next(self) -> bool:
        self.make("next.bin", 1000)
        response, body = get(self, "/file/next.bin")
        return response.status == 200 and body == self.content[:1000]


def _root() -> Path:
    # A directory of our own; every case rewrites or removes its files.
    root = Path(tempfile.mkdtemp(prefix="wsgipipe-faults-"))
    root.chmod(0o755)
    return root


def _server(root: Path, **options: object) -> GunicornServer:
    return WithoutDacOverride(
        "lifecycle_app:app",
        cwd=TESTS / "apps",
        env={"WSGIPIPE_TEST_ROOT": str(root)},
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    root = _root()
    try:
        with _server(root, worker_class="gthread", threads=4) as process:
            yield Served(process, root, os.urandom(SIZE))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _dead(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "State:\tZ" in status


def get(served: Served, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    return fetch(served.process, path, timeout=TIMEOUT)


class PausedDownload:
    """A download we can pause after its first bytes and then finish."""

    def __init__(self, port: int, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        self.head = self.response.read(HEAD_START)

    def rest(self) -> bytes:
        try:
            return self.head + self.response.read()
        finally:
            self.conn.close()


@pytest.mark.parametrize("mode", ["", "?python=1"], ids=["sendfile", "python"])
def test_file_deleted_mid_stream_is_sent_whole(served: Served, mode: str) -> None:
    name = f"deleted{len(mode)}.bin"
    path = served.make(name)
    download = PausedDownload(served.process.port, f"/file/{name}{mode}")
    path.unlink()  # the open descriptor still reads the old inode
    assert download.rest() == served.content
    assert f" 200 finished {SIZE}/{SIZE} B" in served.line(name)
    assert served.clean()
    assert served.serves_next()


@pytest.mark.parametrize("mode", ["", "?python=1"], ids=["sendfile", "python"])
def test_file_truncated_mid_stream_aborts_the_connection(served: Served, mode: str) -> None:
    name = f"truncated{len(mode)}.bin"
    path = served.make(name)
    download = PausedDownload(served.process.port, f"/file/{name}{mode}")
    os.truncate(path, 1024 * 1024)
    # Never a short body that looks complete: the client sees it cut off.
    with pytest.raises(http.client.IncompleteRead) as cut:
        download.rest()
    assert len(cut.value.partial) + HEAD_START < SIZE
    line = served.line(name)
    assert " 200 failed " in line
    assert "FileChanged" in line
    assert served.clean()
    assert served.serves_next()


@pytest.mark.parametrize("mode", ["", "?python=1"], ids=["sendfile", "python"])
def test_file_grown_mid_stream_sends_exactly_content_length(served: Served, mode: str) -> None:
    name = f"grown{len(mode)}.bin"
    path = served.make(name)
    download = PausedDownload(served.process.port, f"/file/{name}{mode}")
    with path.open("ab") as f:
        f.write(b"appended after the headers went out" * 1000)
    assert download.response.getheader("Content-Length") == str(SIZE)
    assert download.rest() == served.content
    assert f" 200 finished {SIZE}/{SIZE} B" in served.line(name)
    assert served.clean()
    assert served.serves_next()


@pytest.mark.skipif(not _can_remove_permission(), reason="root without setpriv")
def test_permission_removed_between_requests(served: Served) -> None:
    path = served.make("private.bin", 5000)
    response, body = get(served, "/file/private.bin")
    assert (response.status, body) == (200, served.content[:5000])
    path.chmod(0)
    response, body = get(served, "/file/private.bin")
    assert response.status == 403
    assert body == b"403 Forbidden\n"  # no path, no traceback
    assert wait_until(lambda: any(" 403 " in line for line in served.transfers("private.bin")))
    path.chmod(0o644)
    response, body = get(served, "/file/private.bin")
    assert response.status == 200
    assert served.clean()


@pytest.mark.parametrize(
    ("route", "logged"),
    [
        ("tee-raise", "sink broke (injected)"),
        ("tee-full", "No space left on device"),
    ],
)
def test_failing_sink_is_detached_and_the_client_gets_everything(
    served: Served, route: str, logged: str
) -> None:
    name = f"{route}.bin"
    served.make(name, 1024 * 1024)
    response, body = get(served, f"/{route}/{name}")
    assert response.status == 200
    assert body == served.content[: 1024 * 1024]
    assert f" 200 finished {1024 * 1024}/{1024 * 1024} B" in served.line(name)
    assert logged in served.process.log
    assert served.clean()
    assert served.serves_next()


def test_slow_sink_finishes_and_an_abort_during_it_releases(served: Served) -> None:
    served.make("slow.bin", 8 * 64 * 1024)  # 8 chunks, 20 ms each in the sink
    response, body = get(served, "/tee-slow/slow.bin")
    assert (response.status, len(body)) == (200, 8 * 64 * 1024)
    assert " 200 finished " in served.line("slow.bin")

    served.make("slow-abort.bin")  # 512 chunks: 10 s of sink time
    sock = socket.create_connection(("127.0.0.1", served.process.port), timeout=TIMEOUT)
    sock.sendall(b"GET /tee-slow/slow-abort.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(65536)
    sock.close()
    started = time.monotonic()
    assert served.clean()
    assert " 200 aborted " in served.line("slow-abort.bin")
    # Seen at the next write, so within a few 20 ms sink delays, not 10 s.
    assert time.monotonic() - started < 2.0
    assert served.serves_next()


def test_source_raising_mid_stream_aborts_and_is_logged(served: Served) -> None:
    served.make("source.bin")
    conn = http.client.HTTPConnection("127.0.0.1", served.process.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/fail-after/source.bin")
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    line = served.line("source.bin")
    assert " 200 failed " in line
    assert "RuntimeError: source failed mid-stream" in line
    assert served.clean()
    assert served.serves_next()


def test_sigterm_during_a_download_lets_it_finish() -> None:
    root = _root()
    content = os.urandom(SIZE)
    try:
        (root / "big.bin").write_bytes(content)
        (root / "big.bin").chmod(0o644)
        with _server(root, worker_class="gthread", args=[]) as process:
            download = PausedDownload(process.port, "/file/big.bin")
            process.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            started = time.monotonic()
            assert download.rest() == content
            line = wait_for_transfer(process, "/file/big.bin", timeout=TIMEOUT)
            assert f" 200 finished {SIZE}/{SIZE} B" in line
            assert process.process.wait(TIMEOUT) == 0  # type: ignore[union-attr]
            assert time.monotonic() - started < 5  # gunicorn's graceful_timeout here
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_sigterm_with_a_stalled_client_ends_within_graceful_timeout() -> None:
    root = _root()
    try:
        (root / "big.bin").write_bytes(os.urandom(SIZE))
        (root / "big.bin").chmod(0o644)
        args = ["--graceful-timeout", "1"]
        with _server(root, worker_class="gthread", args=args) as process:
            download = PausedDownload(process.port, "/file/big.bin")  # then stops reading
            worker = process.worker_pids()[0]
            assert open_files(worker, root)
            process.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            started = time.monotonic()
            process.process.wait(TIMEOUT)  # type: ignore[union-attr]
            assert time.monotonic() - started < 3
            # The worker is gone (at most a zombie waiting to be reaped), and
            # its descriptors went with it.
            assert wait_until(lambda: _dead(worker), TIMEOUT)
            assert not open_files(worker, root)
            with pytest.raises(http.client.IncompleteRead):
                download.rest()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_sigkill_of_a_worker_mid_download_leaves_the_rest_serving() -> None:
    root = _root()
    content = os.urandom(SIZE)
    try:
        (root / "big.bin").write_bytes(content)
        (root / "big.bin").chmod(0o644)
        with _server(root, worker_class="gthread", workers=2) as process:
            download = PausedDownload(process.port, "/file/big.bin")
            holders = [pid for pid in process.worker_pids() if open_files(pid, root)]
            assert len(holders) == 1
            victim = holders[0]
            survivor = next(pid for pid in process.worker_pids() if pid != victim)
            os.kill(victim, signal.SIGKILL)
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                download.rest()
            # The arbiter replaces the worker; the other one never noticed.
            assert wait_until(
                lambda: len(process.worker_pids()) == 2 and victim not in process.worker_pids(),
                TIMEOUT,
            )
            assert survivor in process.worker_pids()
            for _ in range(10):
                conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=TIMEOUT)
                conn.request("GET", "/file/big.bin?offset=5&length=100")
                response = conn.getresponse()
                assert (response.status, response.read()) == (206, content[5:105])
                conn.close()
            assert wait_until(lambda: not process.open_files(root), TIMEOUT)
    finally:
        shutil.rmtree(root, ignore_errors=True)
