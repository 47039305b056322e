"""Endings a release review found unhandled: every job handed on, no forged log line."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import threading
import time
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from webtest import TestApp

from wsgipipe import SinkError, Static, Tee, process_response, zip_response
from wsgipipe.gunicorn import WORKER_CLASS
from wsgipipe.gunicorn._sender import Job, Sender
from wsgipipe.testing import GunicornServer

REPO = Path(__file__).parents[1]


def test_a_job_posted_behind_stop_is_still_handed_on() -> None:
    # "stop" and a job read in the same turn: the job must not be left in the
    # loop's set after the loop ended (its body would never be closed).
    done: list[Job] = []
    sender = Sender(done.append)
    client, server = socket.socketpair()
    try:
        server.setblocking(False)
        job = Job(server, 0, 0, 1)  # never pumped: the loop stops first
        sender._post("stop", "worker shutdown")  # before start(): both wait in the inbox
        sender.submit(job)
        sender.start()
        sender._thread.join(5)
        assert not sender._thread.is_alive()
        assert done == [job]
        assert job.ending == "aborted"
    finally:
        client.close()
        server.close()


def test_an_early_failure_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    # The child's stderr often echoes request input (a name from the query).
    code = "import sys; sys.stderr.write('bad name\\nFORGED 200 finished'); sys.exit(1)"

    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        argv = [sys.executable, "-c", code]
        return process_response(environ, start_response, argv)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="wsgipipe.sources"):
        TestApp(app, lint=True).get("/", status=502)
    [record] = [r for r in caplog.records if r.name == "wsgipipe.sources"]
    line = record.getMessage()
    assert "\n" not in line and "bad name%0AFORGED 200 finished" in line, line


@pytest.mark.parametrize(
    ("folder", "names"),
    [("x" * 300, None), ("sub/" + "y" * 5000, None), ("sub", ["z" * 300])],
    ids=["long-folder", "long-path", "long-member"],
)
def test_a_name_the_filesystem_refuses_is_a_zip_404(
    tmp_path: Path, folder: str, names: list[str] | None
) -> None:
    # The /zip/<dir> route passes the request path: ENAMETOOLONG is client input.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"a")

    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return zip_response(environ, start_response, tmp_path, names, folder=folder)  # type: ignore[arg-type]

    response = TestApp(app, lint=True).get("/", status=404)
    assert response.body == b"404 Not Found\n"


def test_a_start_racing_the_flusher_start_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two first requests in a fresh worker: the second must not append its
    # start to the queue the first is about to replace (in_flight would be
    # short by one for the life of the worker).
    from prometheus_client import CollectorRegistry

    from wsgipipe import prometheus

    metrics = prometheus.TransferMetrics(CollectorRegistry(), interval=3600)
    environ: dict[str, object] = {}
    other: list[threading.Thread] = []
    real = os.getpid

    class Os:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def getpid(self) -> int:
            # Called inside the first request's flusher start: the second
            # request arrives right now, on its own thread.
            if not other:
                other.append(threading.Thread(target=metrics.started, args=(environ,)))
                other[0].start()
                other[0].join(0.5)  # it either finishes or waits for the start
            return real()

    monkeypatch.setattr(prometheus, "os", Os())
    metrics.started(environ)
    other[0].join(5)
    assert list(metrics._events) == [None, None]


def test_a_strict_tee_closes_its_writers_when_a_later_factory_fails() -> None:
    # An empty body starts the per-response sinks at close(): the writer the
    # first factory made must still be finished and closed.
    made: list[io.BytesIO] = []

    def good(environ: object, status: str, headers: object) -> io.BytesIO:
        made.append(io.BytesIO())
        return made[-1]

    def bad(environ: object, status: str, headers: object) -> io.BytesIO:
        raise OSError("disk full")

    def empty(environ: dict[str, object], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "0")])
        return []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    result = Tee(empty, good, bad, strict=True)({"REQUEST_METHOD": "GET"}, start_response)
    assert list(result) == []
    with pytest.raises(SinkError):
        result.close()  # type: ignore[attr-defined]
    assert len(made) == 1 and made[0].closed


def test_a_watch_thread_that_cannot_start_is_started_by_the_next_add(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgipipe import _watch_thread

    seen: list[list[str]] = []

    class Rounds(_watch_thread.WatchThread[str]):
        thread_name = "wsgipipe-review-watch"
        logger = logging.getLogger("wsgipipe.review")
        failure = "review round failed"

        def round(self, watches: list[str]) -> None:
            seen.append(watches)
            self.remove(watches[0])

    class NoThread:
        def __init__(self, **kwargs: object) -> None:
            pass

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    watcher = Rounds()
    monkeypatch.setattr(_watch_thread, "threading", types.SimpleNamespace(Thread=NoThread))
    with pytest.raises(RuntimeError):
        watcher.add("first")
    monkeypatch.undo()
    watcher.add("second")  # threads are back: this one is watched
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [["second"]]


def test_a_round_that_listed_an_ended_response_does_not_cut_its_connection() -> None:
    # The watchdog copies its watches, then checks them: a response that
    # ended in between (its connection kept alive for the next one) must be
    # left alone, however long its last bytes wait.
    from wsgipipe import Pace
    from wsgipipe._idle_timeout import Watchdog

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # the client reads nothing: bytes stay queued
                server.send(b"x" * 65536)
        watchdog = Watchdog()
        watch = watchdog.watch(server, Pace(idle_timeout=1.0))
        watchdog.remove(watch)  # the response ended; a round still holds it
        watch.check(time.monotonic() + 60)
        assert watch.cut is None
        with pytest.raises(BlockingIOError):
            server.send(b"next")  # full, not shut down (that would be EPIPE)
    finally:
        client.close()
        server.close()


def test_a_note_from_the_app_cannot_forge_a_transfer_line() -> None:
    # The Flask docs suggest notes["user"] = name: a name is client input.
    from wsgipipe._record import Transfer

    record = Transfer("GET", "/a", notes={"user": "eve\nGET /admin 200 finished", "via": "python"})
    line = record.line()
    assert "\n" not in line
    assert "user=eve%0AGET /admin 200 finished via=python" in line


def test_an_idle_sender_is_never_stuck() -> None:
    # It waits up to a second in select(): under gunicorn's --timeout 1 the
    # heartbeat check (half the timeout) must not take that for a hang.
    sender = Sender(lambda job: None)
    sender.start()
    try:
        time.sleep(0.2)
        assert sender.stuck_for(time.monotonic() + 5) == 0.0
    finally:
        sender.stop("test over")
    assert not sender._thread.is_alive()


@pytest.mark.server
def test_the_offload_worker_lives_under_a_one_second_timeout(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a" * 100)
    server = GunicornServer(
        "examples.app:app",
        worker_class=WORKER_CLASS,
        threads=2,
        timeout=1,
        cwd=REPO,
        env={"WSGIPIPE_ROOT": str(tmp_path)},
    )
    with server:
        first = server.worker_pids()
        # Requests at different offsets move the main loop's phase against
        # the sender's one-second select().
        for offset in (0.3, 0.45, 0.7, 0.2):
            time.sleep(1 + offset)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
        time.sleep(3)
        assert server.worker_pids() == first, server.log[-2000:]
        assert "WORKER TIMEOUT" not in server.log and "stuck" not in server.log


def test_a_chunked_request_body_reaches_the_upstream() -> None:
    # A client that uploads with Transfer-Encoding: chunked has no
    # Content-Length; the server de-chunks wsgi.input, and the proxy must
    # still forward the body (urllib3 chunks it again), not drop it.
    from wsgiref.util import setup_testing_defaults

    from wsgipipe import Proxy

    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):  # the last chunk
                more = conn.recv(65536)
                data += more
                if not more or (b"\r\n\r\n" in data and b"content-length: 0" in data.lower()):
                    break  # the body was dropped: answer anyway
            seen.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    payload = b"chunk " * 5000
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/upload",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(payload),
    }
    setup_testing_defaults(environ)
    environ.pop("CONTENT_LENGTH", None)
    host, port = listener.getsockname()
    proxy = Proxy(f"http://{host}:{port}")
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)

    result = proxy(environ, start_response)
    try:
        assert b"".join(result) == b"ok"
    finally:
        result.close()  # type: ignore[attr-defined]
        proxy.pool.close()
        thread.join(10)
        listener.close()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert statuses == ["200 OK"]
    assert b"transfer-encoding: chunked" in head.lower()
    decoded, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        decoded, rest = decoded + rest[:size], rest[size + 2 :]
    assert decoded == payload


@pytest.mark.parametrize("mode", ["x-sendfile", "x-accel-redirect"])
def test_offload_headers_carry_any_file_name(tmp_path: Path, mode: str) -> None:
    # UTF-8 names go out as their bytes (PEP 3333: latin-1 str); a name no
    # header can carry (a newline) is served by the app itself.
    (tmp_path / "日本.txt").write_bytes(b"x")
    (tmp_path / "a\nb.txt").write_bytes(b"y")
    app = TestApp(Static(tmp_path, offload=mode), lint=True)
    utf8 = app.get("/%E6%97%A5%E6%9C%AC.txt")
    target = utf8.headers.get("X-Sendfile") or utf8.headers["X-Accel-Redirect"]
    assert target.encode("latin-1").endswith(
        "日本.txt".encode() if mode == "x-sendfile" else b"%E6%97%A5%E6%9C%AC.txt"
    )
    odd = app.get("/a%0Ab.txt")
    if mode == "x-sendfile":
        assert odd.body == b"y" and "X-Sendfile" not in odd.headers
    else:  # quoted: any name fits
        assert odd.headers["X-Accel-Redirect"].endswith("/a%0Ab.txt") and odd.body == b""


class _FailingResponse:
    """An upstream response whose close() fails (what a broken socket can do)."""

    def __init__(self) -> None:
        self.released = False

    def close(self) -> None:
        raise OSError("close failed")

    def release_conn(self) -> None:
        self.released = True


def test_a_half_read_upstream_frees_its_pool_slot_even_if_close_fails() -> None:
    """close() of a half-read upstream response raising must not keep the slot."""
    from wsgipipe._upstream import _Upstream

    upstream = _Upstream(None, "GET", "/", {}, 65536, None)  # type: ignore[arg-type]
    response = _FailingResponse()
    upstream.response = response  # type: ignore[assignment]
    with pytest.raises(OSError, match="close failed"):
        upstream.close()
    assert response.released
