"""The offloading worker's life: restarts, shutdown, limits, other apps, fallbacks, failures.

Each test starts its own small gunicorn (one worker) because each ends or
bends a worker on purpose. The idle timeout and the minimum rate are off
unless a test is about them, so that only the event under test cuts a client.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_offload import BIG, INDEX, raw, read_response, released, request, stall

from examples.clients._http import read_head
from wsgipipe.gunicorn import WORKER_CLASS
from wsgipipe.testing import GunicornServer, transfer_lines, wait_for_transfer, wait_until

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parent.parent
SIXTEEN = 16 * 1024 * 1024
QUIET = {"WSGIPIPE_IDLE_TIMEOUT": "0", "WSGIPIPE_MIN_RATE": "0"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("public")
    (path / "index.html").write_bytes(INDEX)
    (path / "big.bin").write_bytes(os.urandom(BIG))  # as examples/app.py makes it
    return path


def example(root: Path, *args: str, config: str = "gunicorn.conf.py", **env: str) -> GunicornServer:
    return GunicornServer(
        "examples.app:app",
        worker_class=WORKER_CLASS,
        threads=2,
        cwd=REPO,
        env={"WSGIPIPE_ROOT": str(root), **QUIET, **env},
        config=config,
        args=list(args),
    )


def small(port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw("/index.html", close=True))
        return read_response(sock)[2]


def read_all(sock: socket.socket, buffered: bytes = b"") -> int:
    """Read until the server closes; returns the body size seen."""
    got = len(buffered)
    while chunk := sock.recv(4 * 1024 * 1024):
        got += len(chunk)
    return got


class TestRestarts:
    def test_max_requests_lets_the_download_finish(self, root: Path) -> None:
        with example(root, "--max-requests", "3") as server:
            (first,) = server.worker_pids()
            sock = request(server.port, "/big.bin", close=True)
            head = read_head(sock)
            assert head.status == 200
            assert small(server.port) == INDEX
            assert small(server.port) == INDEX  # the third request: restart after it
            assert server.wait_for_log("Autorestarting worker")
            with sock:
                assert read_all(sock, head.rest) == BIG  # not cut: it finishes
            line = wait_for_transfer(server, "/big.bin")
            assert f" 200 finished {BIG}/{BIG} B" in line and "via=offload" in line, line
            assert wait_until(lambda: first not in server.worker_pids(), 10)
            assert wait_until(lambda: len(server.worker_pids()) == 1, 10)
            assert small(server.port) == INDEX  # the new worker serves

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
    def test_stop_gives_graceful_timeout_then_cuts(self, root: Path, sig: signal.Signals) -> None:
        with example(root) as server:  # --graceful-timeout 5
            (first,) = server.worker_pids()
            stalled = stall(server)
            finisher = request(server.port, "/big.bin", "Range: bytes=0-16777215", close=True)
            rest = read_head(finisher).rest
            signalled = time.monotonic()
            server.process.send_signal(sig)  # type: ignore[union-attr]
            time.sleep(0.5)
            with finisher:  # reads everything within the grace period
                assert read_all(finisher, rest) == SIXTEEN

            def lines() -> list[str]:
                return transfer_lines(server.log, "/big.bin")

            assert wait_until(lambda: len(lines()) == 2, 8), server.log[-2000:]
            took = time.monotonic() - signalled
            stalled.close()
            finished, cut = sorted(lines(), key=lambda line: "aborted" in line)
            assert f" 206 finished {SIXTEEN}/{SIXTEEN} B" in finished, finished
            assert " 200 aborted " in cut and "reason='worker shutdown'" in cut, cut
            assert 2 < took < 5, f"cut {took:.1f}s after the signal (graceful_timeout 5 s)"
            if sig == signal.SIGHUP:  # a reload: a new worker serves meanwhile
                assert wait_until(lambda: first not in server.worker_pids(), 10)
                assert small(server.port) == INDEX


class TestLimits:
    def test_worker_connections_counts_offloaded_transfers(self, root: Path) -> None:
        with example(root, "--worker-connections", "4") as server:
            stalled = [stall(server) for _ in range(4)]
            waiting = socket.create_connection(("127.0.0.1", server.port), timeout=1)
            try:
                waiting.sendall(raw("/index.html", close=True))
                with pytest.raises(TimeoutError):  # not accepted while 4 are in flight
                    waiting.recv(1)
                stalled.pop().close()
                waiting.settimeout(5)
                assert read_response(waiting)[2] == INDEX
            finally:
                waiting.close()
                for sock in stalled:
                    sock.close()
            assert released(server, root, 2)


APPS = """
import os, threading, time

ROOT = os.environ["WSGIPIPE_ROOT"]
lock = threading.Lock()
active = peak = 0


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/file":  # another app's file wrapper, with a length
        f = open(os.path.join(ROOT, "big.bin"), "rb")
        start_response("200 OK", [("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f)
    if path == "/unknown":  # the same without a length: chunked, on gthread's path
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(os.path.join(ROOT, "big.bin"), "rb"))
    if path == "/work":  # an app that uses threads
        return work(environ, start_response)
    body = str(peak).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def work(environ, start_response):
    global active, peak
    with lock:
        active += 1
        peak = max(peak, active)
    seen = []
    helper = threading.Thread(target=lambda: seen.append(threading.current_thread().name))
    helper.start()
    helper.join()
    time.sleep(0.3)
    with lock:
        active -= 1
    body = f"{environ['wsgi.multithread']} {seen[0].startswith('Thread-')}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Path:
    path = tmp_path_factory.mktemp("apps")
    (path / "plain_app.py").write_text(textwrap.dedent(APPS))
    return path


def plain(apps: Path, root: Path, worker_class: str = WORKER_CLASS) -> GunicornServer:
    env = {"WSGIPIPE_ROOT": str(root)}
    return GunicornServer(
        "plain_app:app",
        worker_class=worker_class,
        threads=1,
        cwd=apps,
        env=env,
        args=["--access-logfile", "-"],
    )


class TestOtherApps:
    def test_a_plain_file_wrapper_is_offloaded(self, apps: Path, root: Path) -> None:
        with plain(apps, root) as server:
            stalled = [stall(server, "/file") for _ in range(3)]  # one thread only
            try:
                with request(server.port, "/peak", close=True) as sock:
                    assert read_response(sock)[0] == 200
                with request(server.port, "/file", close=True) as sock:
                    assert len(read_response(sock)[2]) == BIG
            finally:
                for sock in stalled:
                    sock.close()
            assert released(server, root, 1)
            assert f'"GET /file HTTP/1.1" 200 {BIG} ' in server.log

    def test_unknown_length_stays_on_the_thread(self, apps: Path, root: Path) -> None:
        with plain(apps, root) as server:
            with stall(server, "/unknown"):
                waiting = request(server.port, "/peak", close=True)
                waiting.settimeout(1)
                with waiting, pytest.raises(TimeoutError):  # the only thread is sending it
                    waiting.recv(1)
            assert released(server, root, 2)

    @pytest.mark.parametrize("worker_class", ["gthread", WORKER_CLASS])
    def test_threaded_app_as_under_gthread(self, apps: Path, root: Path, worker_class: str) -> None:
        with plain(apps, root, worker_class) as server:
            answers: list[bytes] = []

            def work() -> None:
                with request(server.port, "/work", close=True) as sock:
                    answers.append(read_response(sock)[2])

            clients = [threading.Thread(target=work) for _ in range(3)]
            for client in clients:
                client.start()
            for client in clients:
                client.join(10)
            assert answers == [b"True True"] * 3
            with request(server.port, "/peak", close=True) as sock:
                assert read_response(sock)[2] == b"1"  # threads=1: one request at a time


class TestFallbacks:
    def test_tls(self, root: Path, tmp_path: Path) -> None:
        key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                "/CN=127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        server = example(root, "--certfile", str(cert), "--keyfile", str(key))
        server.port_pattern = re.compile(r"Listening at: https://127\.0\.0\.1:(\d+)")
        with server:
            curl = ["curl", "-sk", "-r", "0-1048575", "-o", "/dev/null", "-w", "%{http_code}"]
            out = subprocess.run(
                [*curl, f"https://127.0.0.1:{server.port}/big.bin"], capture_output=True, timeout=30
            )
            assert out.stdout == b"206"
            line = wait_for_transfer(server, "/big.bin")
        assert " 206 finished 1048576/1048576 B" in line and "via=python" in line, line

    def test_http2(self, root: Path) -> None:
        pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package")
        h2c = ("--http-protocols", "h2,h1", "--http2-cleartext", "both")
        with example(root, *h2c) as server:
            out = subprocess.run(
                [
                    "curl",
                    "-s",
                    "--http2-prior-knowledge",
                    "-r",
                    "0-1048575",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version} %{http_code}",
                    f"{server.url}/big.bin",
                ],
                capture_output=True,
                timeout=30,
            )
            assert out.stdout == b"2 206", out
            line = wait_for_transfer(server, "/big.bin")
        assert " 206 finished 1048576/1048576 B" in line and "via=python" in line, line


HOOKS = """
import sys
exec(open({conf!r}).read())


def post_request(worker, req, environ, resp):
    print(f"post_request {{req.path}} sent={{resp.sent}}", file=sys.stderr, flush=True)
"""


def test_post_request_sees_the_real_ending(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "hooks.py"
    config.write_text(HOOKS.format(conf=str(REPO / "gunicorn.conf.py")))
    with example(root, config=str(config)) as server:
        with request(server.port, "/big.bin", close=True) as sock:
            assert read_all(sock) > BIG
        assert server.wait_for_log(f"post_request /big.bin sent={BIG}", 10)
        with request(server.port, "/big.bin") as sock:
            assert read_head(sock).status == 200
        assert server.wait_for_log("post_request /big.bin", 10, count=2)
        log = server.log
    ended = [line for line in log.splitlines() if "transfer_log GET /big.bin" in line]
    hooks = [line for line in log.splitlines() if line.startswith("post_request")]
    assert len(ended) == 2 and " aborted " in ended[1], ended
    sent = int(hooks[1].rpartition("=")[2])
    assert 0 < sent < BIG and f"aborted {sent}/{BIG} B" in ended[1], (hooks, ended)
    # Each hook ran after its transfer line: when the transfer had really ended.
    assert log.index(ended[0]) < log.index(hooks[0]) < log.index(ended[1]) < log.index(hooks[1])


SABOTAGE = """
exec(open({conf!r}).read())


def post_worker_init(worker):
    from wsgipipe.gunicorn import _sender

    def fail(job):
        raise RuntimeError("injected sender failure")

    _sender.Job.pump = fail
"""


class TestSenderFailure:
    def test_a_dead_sender_ends_its_transfers_and_the_worker(
        self, root: Path, tmp_path: Path
    ) -> None:
        config = tmp_path / "sabotage.py"
        config.write_text(SABOTAGE.format(conf=str(REPO / "gunicorn.conf.py")))
        with example(root, config=str(config)) as server:
            (first,) = server.worker_pids()
            with request(server.port, "/big.bin") as sock:
                assert read_head(sock).status == 200
                line = wait_for_transfer(server, "/big.bin", timeout=10)
            assert " 200 aborted " in line and "reason='offload sender failed'" in line, line
            assert "injected sender failure" in server.log
            assert server.wait_for_log("offload sender died")
            assert wait_until(lambda: first not in server.worker_pids(), 10), server.log[-2000:]
            assert wait_until(lambda: len(server.worker_pids()) == 1, 10)
            assert released(server, root, 1)
            assert server.wait_for_log(r"wsgipipe-testing: worker \d+ booted", 10, count=2)
            assert small(server.port) == INDEX


STUCK = """
exec(open({conf!r}).read())


def post_worker_init(worker):
    import time
    from wsgipipe.gunicorn import _sender

    def block(job):  # as sendfile does on a disk that does not answer
        time.sleep(60)

    _sender.Job.pump = block
"""


def test_a_stuck_sender_stops_the_heartbeat(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "stuck.py"
    config.write_text(STUCK.format(conf=str(REPO / "gunicorn.conf.py")))
    server = example(root, "--timeout", "4", config=str(config))
    server.timeout = 4
    with server:
        (first,) = server.worker_pids()
        with request(server.port, "/big.bin") as sock:
            assert read_head(sock).status == 200
            assert server.wait_for_log("offload sender stuck for", 10)
            assert wait_until(lambda: first not in server.worker_pids(), 10), server.log[-2000:]
        assert "WORKER TIMEOUT" in server.log  # the arbiter replaced it
        assert server.wait_for_log(r"wsgipipe-testing: worker \d+ booted", 10, count=2)
        assert small(server.port) == INDEX


def test_rlimit_nofile_is_raised_or_warned() -> None:
    code = textwrap.dedent(
        """
        import logging, resource, sys, types
        from wsgipipe.gunicorn._limits import check_nofile
        logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
        soft, hard = int(sys.argv[1]), int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        cfg = types.SimpleNamespace(worker_connections=1000, threads=8)
        print(check_nofile(cfg, logging.getLogger("t")))
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )

    def run(soft: int, hard: int) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code, str(soft), str(hard)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        return out.stdout.split("\n")

    need = 2 * 1000 + 8 + 64
    assert run(256, 4096)[:2] == [str(need), str(need)]
    warned = run(256, 512)
    assert warned[0].startswith("WARNING RLIMIT_NOFILE is 512 but worker_connections=1000")
    assert warned[1:3] == ["512", "512"]


@pytest.mark.parametrize(
    ("version", "supported"),
    [((26, 2, 0), False), ((27, 0, 0), True), ((27, 0, 1), True), ((27, 1, 0), False)],
)
def test_gunicorn_version_is_checked(version: tuple[int, ...], supported: bool) -> None:
    from wsgipipe import ConfigurationError
    from wsgipipe.gunicorn._limits import check_version

    if supported:
        check_version(version)
    else:
        with pytest.raises(ConfigurationError, match=r"supports gunicorn >= 27\.0, < 27\.1"):
            check_version(version)
