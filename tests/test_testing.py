"""wsgipipe.testing and its pytest plugin: each helper must catch what it promises to catch."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from webtest import TestApp

from wsgipipe import FileStream, IdleTimeout, Tee, Transfer, TransferLog, sinks
from wsgipipe._through import Delay
from wsgipipe.testing import (
    GunicornServer,
    LeakCheck,
    LeakedFiles,
    ProcUnavailable,
    TransferRecorder,
    _leaks,
    disconnect_after,
    download,
    hang_up_after,
    no_leaked_files,
    open_files,
    raw_request,
    slow_client,
    stalled_client,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CHUNK = 64 * 1024


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(32 * CHUNK + 123))  # 2 MiB: more than socket buffers hold
    return path


def file_app(path: Path, **stream: Any) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = FileStream(path, **stream)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(body.size))],
        )
        return body

    return app


# -- LeakCheck ---------------------------------------------------------------------
class TestLeakCheck:
    def test_names_a_file_left_open(self, big: Path) -> None:
        with pytest.raises(LeakedFiles) as caught, LeakCheck():
            handle = open(big, "rb")  # noqa: SIM115 - the leak under test
        handle.close()
        assert caught.value.still_open == [str(big)]
        assert str(big) in str(caught.value)

    def test_closed_files_pass(self, big: Path) -> None:
        with LeakCheck() as check, open(big, "rb") as f:
            f.read(10)
        assert check.leaked() == []

    def test_files_open_before_the_block_are_not_its_leaks(self, big: Path) -> None:
        with open(big, "rb"), LeakCheck() as check:
            pass
        assert check.warned == []

    def test_file_freed_without_close_is_reported_despite_error_filter(self, big: Path) -> None:
        # pytest runs with -W error::ResourceWarning; inside __del__ that would
        # only be printed. The check must still see it and name the file.
        def drop() -> None:
            open(big, "rb")  # noqa: SIM115 - freed unclosed on return

        with pytest.raises(LeakedFiles) as caught, LeakCheck():
            drop()
        assert caught.value.unclosed == [str(big)]
        assert caught.value.still_open == []

    def test_stream_opened_from_a_descriptor_is_named_by_path(self, big: Path) -> None:
        # FileStream opens with os.open, so the warning says name=<fd>.
        def drop() -> None:
            FileStream(big).open()

        with pytest.raises(LeakedFiles) as caught, LeakCheck():
            drop()
        assert caught.value.paths == [str(big)]

    def test_file_held_by_a_reference_cycle_is_reported(self, big: Path) -> None:
        class Holder:
            pass

        gc.disable()  # keep the collector from freeing the cycle mid-block
        try:
            with pytest.raises(LeakedFiles) as caught, LeakCheck():
                holder = Holder()
                holder.me = holder  # type: ignore[attr-defined]
                holder.file = open(big, "rb")  # type: ignore[attr-defined]  # noqa: SIM115
                del holder
        finally:
            gc.enable()
        assert caught.value.paths == [str(big)]

    def test_under_limits_the_check_to_one_directory(self, big: Path, tmp_path: Path) -> None:
        elsewhere = tmp_path / "other"
        elsewhere.mkdir()
        with LeakCheck(elsewhere) as check:
            handle = open(big, "rb")  # noqa: SIM115
        handle.close()
        assert check.warned == []
        with pytest.raises(LeakedFiles), no_leaked_files(tmp_path):
            handle = open(big, "rb")  # noqa: SIM115
        handle.close()

    def test_sockets_are_not_files(self) -> None:
        with LeakCheck():
            pair = socket.socketpair()
        for sock in pair:
            sock.close()

    def test_error_in_the_block_wins_and_carries_the_report(self, big: Path) -> None:
        with pytest.raises(KeyError) as caught, LeakCheck():
            handle = open(big, "rb")  # noqa: SIM115
            raise KeyError("boom")
        handle.close()
        if sys.version_info >= (3, 11):
            assert any(str(big) in note for note in caught.value.__notes__)

    def test_other_warnings_still_follow_the_filters(self) -> None:
        with pytest.raises(UserWarning), LeakCheck():
            warnings.warn("still an error under filterwarnings=error", UserWarning, stacklevel=1)


# -- simulated clients, in-process ---------------------------------------------------------
class TestDisconnectAfter:
    def test_aborted_after_exactly_the_chunks_that_fit(self, big: Path) -> None:
        recorder = TransferRecorder()
        with no_leaked_files(big.parent):
            result = disconnect_after(recorder.wrap(file_app(big)), CHUNK)
        assert result.received == big.read_bytes()[:CHUNK]
        assert isinstance(result.write_error, BrokenPipeError)
        assert (recorder.last.outcome, recorder.last.bytes_sent) == ("aborted", CHUNK)
        assert result.wsgipipe_body is not None and result.wsgipipe_body.closed

    def test_a_body_that_fits_finishes(self, big: Path) -> None:
        recorder = TransferRecorder()
        result = disconnect_after(recorder.wrap(file_app(big)), big.stat().st_size)
        assert result.received == big.read_bytes()
        assert recorder.last.outcome == "finished"
        assert result.write_error is None

    def test_disconnect_before_the_first_byte(self, big: Path) -> None:
        recorder = TransferRecorder()
        with no_leaked_files(big.parent):
            result = disconnect_after(recorder.wrap(file_app(big)), 0)
        assert result.received == b""
        assert (recorder.last.outcome, recorder.last.bytes_sent) == ("aborted", 0)

    def test_through_webtest_lint(self, big: Path) -> None:
        recorder = TransferRecorder()
        testapp = TestApp(recorder.wrap(file_app(big)), lint=True)
        with no_leaked_files(big.parent):
            result = disconnect_after(testapp, 2 * CHUNK, "/big.bin")
        assert len(result.received) == 2 * CHUNK
        assert recorder.last.path == "/big.bin"
        assert recorder.last.outcome == "aborted"

    def test_closes_a_plain_generator_app(self) -> None:
        events: list[str] = []

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                for n in range(10):
                    yield b"x" * 10
                    events.append(f"sent {n}")
            finally:
                events.append("closed")

        result = disconnect_after(app, 25)
        assert result.received == b"x" * 20
        assert events == ["sent 0", "sent 1", "closed"]

    def test_request_details_reach_the_app(self) -> None:
        seen: dict[str, Any] = {}

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
            seen.update(environ)
            start_response("204 No Content", [])
            return []

        result = download(
            app, "/a?b=c", method="HEAD", headers={"Range": "bytes=0-1"}, environ={"x.y": 1}
        )
        assert result.status == "204 No Content"
        assert (seen["PATH_INFO"], seen["QUERY_STRING"], seen["REQUEST_METHOD"]) == (
            "/a",
            "b=c",
            "HEAD",
        )
        assert (seen["HTTP_RANGE"], seen["x.y"]) == ("bytes=0-1", 1)

    def test_environ_overrides_what_was_built(self) -> None:
        seen: list[str] = []

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
            seen.append(environ["PATH_INFO"])
            start_response("200 OK", [])
            return []

        download(app, environ={"PATH_INFO": "/a/%2e%2e/b"})
        assert seen == ["/a/%2e%2e/b"]

    def test_start_response_with_exc_info_after_the_first_byte_raises(self) -> None:
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
            start_response("200 OK", [])
            yield b"first"
            try:
                raise OSError("disk gone")
            except OSError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"

        with pytest.raises(OSError, match="disk gone"):
            download(app)


class TestDownload:
    def test_reads_everything_and_the_tee_saw_the_same(self, big: Path) -> None:
        capture = sinks.Capture()
        result = download(Tee(file_app(big), capture))
        assert result.received == big.read_bytes()
        assert bytes(capture.last.body) == result.received
        assert result.header("content-length") == str(big.stat().st_size)

    def test_app_errors_are_raised_after_close(self) -> None:
        closed: list[bool] = []

        class Failing:
            def __iter__(self) -> Iterator[bytes]:
                yield b"abc"
                raise RuntimeError("disk on fire")

            def close(self) -> None:
                closed.append(True)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [])
            return Failing()

        with pytest.raises(RuntimeError, match="disk on fire"):
            download(app)
        assert closed == [True]
        result = download(app, raise_errors=False)
        assert isinstance(result.error, RuntimeError)
        assert result.received == b"abc"
        assert closed == [True, True]


# -- simulated clients over a loopback connection ----------------------------------------
class TestSocketClients:
    def test_stalled_client_is_cut_off_by_idle_timeout(self, big: Path) -> None:
        recorder = TransferRecorder()
        app = recorder.wrap(IdleTimeout(file_app(big), 0.3))
        with no_leaked_files(big.parent):
            result = stalled_client(app, timeout=3.0)
        assert result.release_delay is not None and 0.25 < result.release_delay < 1.0
        assert recorder.last.outcome == "aborted"
        assert recorder.last.reason == "idle timeout 0.3s"
        assert len(result.received) < big.stat().st_size

    def test_stalled_client_without_a_guard_holds_the_file_until_it_leaves(self, big: Path) -> None:
        recorder = TransferRecorder()
        result = stalled_client(recorder.wrap(file_app(big)), read_first=CHUNK, timeout=0.5)
        assert result.release_delay is not None and result.release_delay >= 0.4
        assert len(result.received) >= CHUNK
        assert recorder.last.outcome == "aborted"
        assert recorder.last.reason is None

    def test_hang_up_during_a_delay_releases_at_once(self, big: Path) -> None:
        recorder = TransferRecorder()
        app = recorder.wrap(Delay(file_app(big), 1.0))
        with no_leaked_files(big.parent):
            result = hang_up_after(app, 1, timeout=5.0)
        assert result.release_delay is not None and result.release_delay < 0.5
        assert recorder.last.outcome == "aborted"
        assert recorder.last.reason == "client disconnected"

    def test_slow_client_gets_everything(self, big: Path) -> None:
        recorder = TransferRecorder()
        app = recorder.wrap(IdleTimeout(file_app(big), 1.0))
        result = slow_client(app, read_size=CHUNK, pause=0.02)
        assert hashlib.sha256(result.received).digest() == hashlib.sha256(big.read_bytes()).digest()
        assert recorder.last.outcome == "finished"
        assert result.release_delay is None
        assert result.duration >= 0.02 * 4

    def test_zero_copy_goes_out_through_sendfile(self, big: Path) -> None:
        recorder = TransferRecorder()
        result = slow_client(recorder.wrap(file_app(big)), read_size=CHUNK, pause=0, zero_copy=True)
        assert result.received == big.read_bytes()
        assert (recorder.last.outcome, recorder.last.notes.get("via")) == ("finished", "sendfile")

    def test_stalled_client_on_the_sendfile_path(self, big: Path) -> None:
        recorder = TransferRecorder()
        app = recorder.wrap(IdleTimeout(file_app(big), 0.3))
        with no_leaked_files(big.parent):
            result = stalled_client(app, timeout=3.0, zero_copy=True)
        assert result.release_delay is not None and result.release_delay < 1.5
        assert (recorder.last.outcome, recorder.last.notes.get("via")) == ("aborted", "sendfile")
        assert recorder.last.reason == "idle timeout 0.3s"

    def test_the_app_sees_the_connection_as_gunicorn_exposes_it(self) -> None:
        seen: list[object] = []

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
            seen.append(environ.get("gunicorn.socket"))
            start_response("200 OK", [])
            return [b"hi"]

        result = slow_client(app, pause=0)
        assert result.received == b"hi"
        assert isinstance(seen[0], socket.socket)


# -- TransferRecorder ---------------------------------------------------------------
class TestTransferRecorder:
    def test_records_from_on_done_and_from_the_logger(self, big: Path) -> None:
        direct = TransferRecorder()
        logged = TransferRecorder()
        logger = logging.getLogger("wsgipipe")
        level = logger.level
        with logged.listening():
            download(direct.wrap(file_app(big)))
        assert logger.level == level
        assert len(direct.transfers) == len(logged.transfers) == 1
        assert direct.last is logged.last
        assert direct.last.bytes_sent == big.stat().st_size

    def test_wait_for_names_what_it_got(self) -> None:
        recorder = TransferRecorder()
        recorder(Transfer("GET", "/only", status=200, outcome="finished"))
        assert recorder.wait_for(1, timeout=0.1)[0].path == "/only"
        with pytest.raises(AssertionError, match="GET /only 200 finished"):
            recorder.wait_for(2, timeout=0.05)
        recorder.clear()
        with pytest.raises(AssertionError, match="no transfer"):
            _ = recorder.last

    def test_sha256_of_what_was_sent(self, big: Path) -> None:
        recorder = TransferRecorder()
        app = TransferLog(Tee(file_app(big), sinks.Digest()), on_done=recorder)
        download(app)
        assert recorder.last.notes["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()


def test_loading_the_toolkit_imports_no_server_and_no_test_client() -> None:
    code = (
        "import sys, wsgipipe.pytest_plugin, wsgipipe.testing;"
        "print([m for m in ('gunicorn', 'webtest', 'flask') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the pytest plugin ----------------------------------------------------------------
LEAKY_SUITE = """
import pytest

def test_leaks_with_fixture(no_leaked_files, tmp_path):
    p = tmp_path / "kept-open.txt"
    p.write_text("x")
    test_leaks_with_fixture.keep = open(p)

def test_leaks_without_fixture(tmp_path):
    p = tmp_path / "also-open.txt"
    p.write_text("x")
    test_leaks_without_fixture.keep = open(p)

def test_clean(no_leaked_files, tmp_path):
    p = tmp_path / "closed.txt"
    p.write_text("x")
    with open(p) as f:
        assert f.read() == "x"

def test_fails_and_leaks(no_leaked_files, tmp_path):
    p = tmp_path / "failing.txt"
    p.write_text("x")
    test_fails_and_leaks.keep = open(p)
    assert False, "the real failure"
"""


class TestPlugin:
    # Subprocess runs: the leaked files of these suites must not outlive them here.
    def test_fixture_fails_a_leaking_test_and_names_the_file(
        self, pytester: pytest.Pytester
    ) -> None:
        pytester.makepyfile(LEAKY_SUITE)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=1, errors=1)
        result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks_with_fixture*"])
        result.stdout.fnmatch_lines(["*kept-open.txt*"])
        # A failing test keeps its locals alive: its real failure is enough.
        assert "teardown of test_fails_and_leaks" not in result.stdout.str()

    def test_option_checks_every_test(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(LEAKY_SUITE)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--wsgipipe-leak-check")
        result.assert_outcomes(passed=3, failed=1, errors=2)  # a teardown error is not a failure
        result.stdout.fnmatch_lines(["*also-open.txt*"])

    def test_ini_switch(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(LEAKY_SUITE)
        pytester.makeini("[pytest]\nwsgipipe_leak_check = true\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=1, errors=2)

    def test_transfer_recorder_fixture(self, transfer_recorder: TransferRecorder) -> None:
        app = TransferLog(file_app_bytes(b"hello"))
        download(app, "/hello")
        assert [t.line().split()[:5] for t in transfer_recorder.transfers] == [
            ["GET", "/hello", "200", "finished", "5/5"]
        ]


def file_app_bytes(data: bytes) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    return app


# -- real gunicorn through the plugin's fixture -----------------------------------------------
SERVED_APP = """
import logging
import os
from wsgipipe import FileStream, TransferLog

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")

def files(environ, start_response):
    stream = FileStream(os.path.join(os.environ["ROOT"], environ["PATH_INFO"].lstrip("/")))
    start_response("200 OK", [("Content-Length", str(stream.size))])
    return stream

app = TransferLog(files)
"""


@pytest.mark.server
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_run_gunicorn_fixture(run_gunicorn: Any, worker_class: str, tmp_path: Path) -> None:
    (tmp_path / "served_app.py").write_text(SERVED_APP)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # more than loopback buffers hold
    server = run_gunicorn(
        "served_app:app", worker_class=worker_class, cwd=tmp_path, env={"ROOT": str(tmp_path)}
    )
    (worker,) = server.worker_pids()
    assert server.url == f"http://127.0.0.1:{server.port}"
    with raw_request(server, "/big.bin") as client:
        assert client.recv(4096).startswith(b"HTTP/1.1 200 OK")
        # The worker holds the file while the client reads nothing more.
        assert wait_until(lambda: open_files(worker, big.parent) == [str(big)], 5)
    assert wait_until(lambda: server.open_files(big.parent) == [], 5), server.open_files()
    assert " 200 aborted " in wait_for_transfer(server, "/big.bin")


def test_transfer_lines_in_any_log_format() -> None:
    log = "\n".join(
        [
            "[2026-01-01 00:00:00 +0000] [12] wsgipipe GET /a.bin 200 finished 5/5 B 0.00s",
            '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /a.bin HTTP/1.1" 200 5 "-" "-"',
            "INFO:wsgipipe:HEAD /a.bin 200 finished 0/5 B 0.00s",
            "wsgipipe GET /a.bin.gz 404 finished 9/9 B 0.00s",
            "wsgipipe GET /b 200 aborted 65536/? B 1.20s reason='idle timeout 1s'",
        ]
    )
    assert transfer_lines(log, "/a.bin") == ["GET /a.bin 200 finished 5/5 B 0.00s"]
    assert transfer_lines(log, "/a.bin", method="HEAD") == ["HEAD /a.bin 200 finished 0/5 B 0.00s"]
    assert [line.split()[1] for line in transfer_lines(log)] == ["/a.bin", "/a.bin.gz", "/b"]


def test_raw_request_sends_one_request() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with raw_request(port, "/x?y=1", method="HEAD", headers={"Range": "bytes=0-1"}):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                received = b""
                while not received.endswith(b"\r\n\r\n"):
                    received += conn.recv(1024)
    assert received.decode().split("\r\n") == [
        "HEAD /x?y=1 HTTP/1.1",
        "Host: 127.0.0.1",
        "Range: bytes=0-1",
        "",
        "",
    ]


# -- start-up, fixture order, systems without /proc, Download's names --------------------
@pytest.mark.server
def test_gunicorn_that_cannot_load_the_app_fails_at_start_up(tmp_path: Path) -> None:
    # gunicorn listens and forks a worker before the worker imports the app,
    # so "started" must wait for the import, and a failure must say why.
    server = GunicornServer("missing_module_for_this_test:app", cwd=tmp_path, startup_timeout=15)
    with pytest.raises(RuntimeError) as failed:
        server.start()
    message = str(failed.value)
    assert message.startswith("gunicorn exited with 3 before it was ready")
    assert "No module named 'missing_module_for_this_test'" in message
    assert server.process is not None and server.process.poll() is not None


@pytest.mark.server
@pytest.mark.parametrize("config", ["conf.py", "python:conf"])
def test_gunicorn_config_of_the_test_still_applies(tmp_path: Path, config: str) -> None:
    (tmp_path / "hello_app.py").write_text(HELLO_APP)
    (tmp_path / "conf.py").write_text(
        "def post_worker_init(worker):\n    print('their hook ran', flush=True)\n"
    )
    with GunicornServer("hello_app:app", cwd=tmp_path, config=config, workers=2) as server:
        assert len(server.worker_pids()) == 2
        assert server.log.count("their hook ran") == 2


HELLO_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]
"""

ORDER_SUITE = """
import urllib.request

def fetch(server):
    with urllib.request.urlopen(server.url + "/") as response:
        return response.read()

def test_server_first(run_gunicorn, no_leaked_files, tmp_path):
    assert fetch(run_gunicorn("hello_app:app", cwd=HERE)) == b"hello"

def test_check_first(no_leaked_files, run_gunicorn, tmp_path):
    assert fetch(run_gunicorn("hello_app:app", cwd=HERE)) == b"hello"
"""


@pytest.mark.server
def test_no_leaked_files_ignores_the_servers_log_in_any_fixture_order(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(hello_app=HELLO_APP)
    pytester.makepyfile(f"HERE = {str(pytester.path)!r}\n" + ORDER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


class TestWithoutProc:
    @pytest.fixture(autouse=True)
    def no_proc(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        # Only a system without /proc can be simulated here: point the check elsewhere.
        monkeypatch.setattr(_leaks, "PROC", str(tmp_path / "no-proc"))

    def test_leak_check_refuses_instead_of_passing(self) -> None:
        with pytest.raises(ProcUnavailable, match="/self/fd does not exist"), no_leaked_files():
            pass

    def test_open_files_refuses_instead_of_saying_nothing_is_open(self) -> None:
        with pytest.raises(ProcUnavailable):
            open_files()

    def test_descriptor_counts_refuse_too(self) -> None:
        with pytest.raises(ProcUnavailable):
            _leaks.fd_count(os.getpid())

    def test_warnings_only_is_a_choice_and_still_catches_unclosed_files(self, big: Path) -> None:
        with pytest.raises(LeakedFiles) as leak, LeakCheck(warnings_only=True):
            f = open(big, "rb")  # noqa: SIM115 - the leak being tested
            del f
        assert leak.value.unclosed == [str(big)]


def test_plugin_without_proc_says_so(pytester: pytest.Pytester) -> None:
    # A plugin loaded first points the check at a /proc that is not there,
    # before the report header is written.
    pytester.makepyfile(
        no_proc="from wsgipipe.testing import _leaks\n_leaks.PROC = '/nonexistent'\n"
    )
    pytester.makepyfile("def test_one(no_leaked_files):\n    pass\n")
    args = ["-p", "no:cacheprovider", "-rs", "-p", "no_proc", "--wsgipipe-leak-check"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(skipped=1)  # the fixture, asked for by name, skips with the reason
    result.stdout.fnmatch_lines(["*SKIPPED*/self/fd does not exist on this system*"])
    # The suite-wide option cannot skip every test: the header says it is off.
    result.stdout.fnmatch_lines(["wsgipipe leak check: OFF, *does not exist*"])


def test_download_names_its_body_apart_from_webtests_bytes(big: Path) -> None:
    result = download(file_app(big))
    assert isinstance(result.received, bytes) and isinstance(result.wsgipipe_body, FileStream)
    with pytest.warns(DeprecationWarning, match="Download.body is now Download.wsgipipe_body"):
        assert result.body is result.wsgipipe_body


def test_names_that_left_the_public_api_still_resolve_with_a_warning() -> None:
    import wsgipipe.testing
    from wsgipipe.testing._matrix import MatrixServer

    with pytest.warns(DeprecationWarning, match="wsgipipe.testing._matrix.MatrixServer"):
        assert wsgipipe.testing.ServerProcess is MatrixServer
    with pytest.raises(AttributeError, match="no_such_helper"):
        wsgipipe.testing.no_such_helper  # noqa: B018
