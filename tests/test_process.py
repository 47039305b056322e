"""ProcessStream: a child's stdout as a body; the child ends with the body, on every ending.

In-process tests run real children under WebTest; the server tests run real
children under a real gunicorn and look at the truth in psutil and /proc.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
import pytest
from server_checks import fetch, fetch_cut_short
from webtest import TestApp

from wsgipipe import (
    ConfigurationError,
    FileErrors,
    ProcessFailed,
    ProcessStream,
    Tee,
    TransferLog,
    process_response,
    sinks,
)
from wsgipipe.testing import (
    GunicornServer,
    TransferRecorder,
    raw_request,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

APPS = Path(__file__).with_name("apps")
CONFIG = str(Path(__file__).parents[1] / "gunicorn.conf.py")


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def app_for(argv: list[str], **options: object) -> TestApp:
    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return process_response(environ, start_response, argv, **options)  # type: ignore[arg-type]

    return TestApp(app, lint=True)


# -- in process ------------------------------------------------------------------
def test_streams_stdout_and_reaps_the_child() -> None:
    body = ProcessStream(py("import sys; sys.stdout.write('a' * 200000)"))
    assert b"".join(body) == b"a" * 200000
    body.close()
    assert body.outcome == "finished"
    assert body.returncode == 0
    assert not psutil.pid_exists(body.pid or 0) or psutil.Process(body.pid).ppid() != os.getpid()


def test_stderr_flood_cannot_block_the_child() -> None:
    # 1 MiB of stderr before any stdout: without draining, the child blocks for ever.
    code = "import sys; sys.stderr.write('x' * 1048576); sys.stderr.flush(); print('done')"
    response = app_for(py(code)).get("/")
    assert response.body == b"done\n"


def test_env_and_cwd_reach_the_child(tmp_path: Path) -> None:
    code = "import os; print(os.environ['ONLY'], os.getcwd(), len(os.environ) < 5)"
    body = app_for(py(code), env={"ONLY": "this"}, cwd=str(tmp_path)).get("/").body
    assert body.decode().split() == ["this", str(tmp_path), "True"]


def test_child_has_its_own_process_group() -> None:
    body = ProcessStream(py("import os; print(os.getpgid(0), os.getsid(0))"))
    pgid, sid = b"".join(body).split()
    body.close()
    assert int(pgid) == int(sid) == body.pid != os.getpgid(0)


def test_nonzero_exit_before_first_byte_is_a_clean_502(caplog: pytest.LogCaptureFixture) -> None:
    code = "import sys; sys.stderr.write('password=hunter2 failed'); sys.exit(3)"
    response = app_for(py(code)).get("/", status=502)
    assert response.body == b"502 Bad Gateway\n"
    assert b"hunter2" not in response.body
    assert "exited with status 3; stderr: password=hunter2 failed" in caplog.text


def test_missing_program_is_a_500() -> None:
    response = app_for(["/nonexistent/wsgipipe-child"]).get("/", status=500)
    assert response.body == b"500 Internal Server Error\n"


def test_nonzero_exit_after_first_byte_fails_the_transfer() -> None:
    recorder = TransferRecorder()
    code = "import sys, time; print('part', flush=True); time.sleep(0.1); sys.exit(4)"

    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return process_response(environ, start_response, py(code))  # type: ignore[arg-type]

    client = TestApp(TransferLog(app, on_done=recorder), lint=True)
    with pytest.raises(ProcessFailed, match="exited with status 4"):
        client.get("/")
    [record] = recorder.transfers
    assert record.outcome == "failed"
    assert record.bytes_sent == len(b"part\n")


def test_works_under_tee_and_file_errors() -> None:
    digest = sinks.Digest("sha256")
    code = "import sys; sys.stdout.write('t' * 70000)"

    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return process_response(environ, start_response, py(code))  # type: ignore[arg-type]

    client = TestApp(FileErrors(Tee(app, digest)), lint=True)
    assert client.get("/").body == b"t" * 70000
    failing = TestApp(FileErrors(Tee(app_for(py("raise SystemExit(2)")).app, digest)), lint=True)
    assert failing.get("/", status=502).body == b"502 Bad Gateway\n"


def test_head_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    response = app_for(py(f"open({str(marker)!r}, 'w')")).head("/")
    assert response.status_int == 200
    assert not marker.exists()


def test_argv_must_be_a_list() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        ProcessStream("gzip -c /etc/passwd")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ProcessStream([])


def test_close_before_start_and_twice_is_safe() -> None:
    body = ProcessStream(py("print(1)"))
    body.close()
    body.close()
    assert body.pid is None
    assert list(body) == []


def test_stubborn_child_is_killed_after_the_grace_period() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('x', flush=True); time.sleep(30)"
    )
    body = ProcessStream(py(code), grace=0.3)
    assert next(body).startswith(b"x")
    started = time.monotonic()
    body.close()
    took = time.monotonic() - started
    assert 0.25 <= took < 2
    assert body.returncode == -9  # SIGKILL: SIGTERM was ignored
    assert body.outcome == "aborted"


# -- under gunicorn ----------------------------------------------------------------
@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="module", params=["gthread", "sync"])
def server(marks: Path, request: pytest.FixtureRequest) -> Iterator[GunicornServer]:
    with GunicornServer(
        "process_app:app",
        worker_class=request.param,
        threads=4,
        cwd=APPS,
        env={"WSGIPIPE_TEST_MARKS": str(marks)},
        config=CONFIG,
    ) as server:
        yield server


def worker(server: GunicornServer) -> psutil.Process:
    [pid] = server.worker_pids()
    return psutil.Process(pid)


def pipes(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("pipe:"))


def clear(marks: Path, *names: str) -> None:
    """Remove the marks an earlier run (the other worker class) left."""
    for name in names:
        (marks / name).unlink(missing_ok=True)


def read_mark(marks: Path, name: str) -> str:
    assert wait_until(lambda: (marks / name).exists(), 5), f"the child never wrote {name}"
    return (marks / name).read_text()


def gone(pids: Iterable[int]) -> bool:
    """No such process, not even a zombie."""
    return not any(psutil.pid_exists(pid) for pid in pids)


def dead_orphan(pid: int, worker: int) -> bool:
    """Gone, or a zombie that init now owns: dead, and no longer the worker's to reap.

    An orphaned grandchild is reaped by init, not by the worker; how soon is
    init's business (this sandbox's init collects them every couple of seconds).
    """
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE and process.ppid() != worker
    except psutil.NoSuchProcess:
        return True


def start(server: GunicornServer, path: str, want: int) -> tuple[object, float]:
    sock = raw_request(server, path)
    got = b""
    while len(got) < want:
        data = sock.recv(65536)
        assert data, got
        got += data
    return sock, time.monotonic()


@pytest.mark.server
def test_abort_mid_stream_leaves_no_child_zombie_or_pipe(
    server: GunicornServer, marks: Path
) -> None:
    clear(marks, "endless")
    pid = worker(server).pid
    baseline = pipes(pid)
    sock, _ = start(server, "/endless", 300_000)
    child, grandchild = (int(p) for p in read_mark(marks, "endless").split())
    assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    sock.close()  # type: ignore[attr-defined]
    closed = time.monotonic()
    assert wait_until(lambda: gone([child]), 1.0), "the child survived, or was not reaped"
    assert wait_until(lambda: dead_orphan(grandchild, pid), 1.0), "the grandchild survived"
    assert wait_until(lambda: not worker(server).children(recursive=True), 1.0)
    assert wait_until(lambda: pipes(pid) == baseline, 1.0)
    assert time.monotonic() - closed < 1.0
    line = wait_for_transfer(server, "/endless")
    assert " 200 aborted " in line


@pytest.mark.server
def test_stalled_client_is_cut_and_the_child_ended(server: GunicornServer, marks: Path) -> None:
    clear(marks, "endless")
    before = len(transfer_lines(server.log, "/endless"))
    sock = raw_request(server, "/endless")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    child = int(read_mark(marks, "endless").split()[0])
    # Read nothing: the socket buffers fill, the idle timeout (1 s) cuts it.
    assert wait_until(lambda: gone([child]), 4.0), "a stalled client kept the child alive"
    line = wait_for_transfer(server, "/endless", count=before + 1, timeout=3)
    assert " 200 aborted " in line and "idle timeout" in line
    sock.close()


@pytest.mark.server
def test_client_leaving_a_silent_child_is_noticed_promptly(
    server: GunicornServer, marks: Path
) -> None:
    clear(marks, "silent")
    before = len(transfer_lines(server.log, "/silent"))
    sock, _ = start(server, "/silent", 1000)
    child = int(read_mark(marks, "silent"))
    sock.close()  # type: ignore[attr-defined]
    # Nothing is written while the child is silent, so no write fails:
    # only the poll on the client socket can see the disconnect.
    assert wait_until(lambda: gone([child]), 1.0), "a silent child outlived its client"
    line = wait_for_transfer(server, "/silent", count=before + 1)
    assert " 200 aborted " in line and "client disconnected" in line


@pytest.mark.server
def test_client_leaving_before_the_first_byte(server: GunicornServer, marks: Path) -> None:
    clear(marks, "mute")
    before = len(transfer_lines(server.log, "/mute"))
    sock = raw_request(server, "/mute")
    child = int(read_mark(marks, "mute"))
    sock.close()
    assert wait_until(lambda: gone([child]), 1.0), "a child with no output outlived its client"
    line = wait_for_transfer(server, "/mute", count=before + 1)
    assert " aborted 0/" in line and "client disconnected" in line
    assert "Error handling request" not in server.log  # a routine disconnect, no traceback


@pytest.mark.server
def test_child_ignoring_sigterm_is_killed_after_grace(server: GunicornServer, marks: Path) -> None:
    clear(marks, "stubborn", "stubborn-term")
    sock, _ = start(server, "/stubborn", 1000)
    child = int(read_mark(marks, "stubborn"))
    sock.close()  # type: ignore[attr-defined]
    read_mark(marks, "stubborn-term")  # SIGTERM came first, and was ignored
    left = time.monotonic()
    assert wait_until(lambda: gone([child]), 2.0)
    # The app's grace is 0.5 s: the SIGKILL came after it, not before.
    assert time.monotonic() - left > 0.3
    wait_for_transfer(server, "/stubborn")


@pytest.mark.server
def test_failure_before_first_byte_is_502_with_stderr_in_log_only(server: GunicornServer) -> None:
    response, body = fetch(server, "/fail-early")
    assert response.status == 502
    assert body == b"502 Bad Gateway\n"
    line = wait_for_transfer(server, "/fail-early")
    assert " 502 " in line and "secret-detail" in line


@pytest.mark.server
def test_failure_after_first_byte_aborts_the_connection(server: GunicornServer) -> None:
    fetch_cut_short(server, "/fail-late")  # no final chunk
    line = wait_for_transfer(server, "/fail-late")
    assert " 200 failed 102400/" in line and "exited with status 4" in line


@pytest.mark.server
def test_full_output_and_drained_stderr(server: GunicornServer) -> None:
    assert fetch(server, "/ok")[1] == b"ok\n" * 1000
    assert " 200 finished 3000/" in wait_for_transfer(server, "/ok")
    assert wait_until(lambda: not worker(server).children(recursive=True), 1.0)
