"""The lifecycle suite under every common WSGI server (the server matrix).

The same app (``tests/apps/lifecycle_app.py``: a FileStream behind TransferLog and
FileErrors) runs under gunicorn's sync, gthread and gevent workers, waitress,
werkzeug's development server, wsgiref and uWSGI. For each server the tests
pin down what ``docs/servers.md`` publishes: that ``close()`` is called (the
transfer line is written from it), how the transfer is logged, whether the
bytes went by ``sendfile``, and that the file is released after an abort
(read from ``/proc/<pid>/fd``, never from warnings).

Set ``WSGIPIPE_MATRIX_REPORT=<file>`` to append the measured release delays
as JSON lines (that is how the table in docs/servers.md was filled in).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sys
import time
import wsgiref.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsgipipe import FileErrors, FileStream, Observed
from wsgipipe.testing import (
    GunicornServer,
    raw_request,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)
from wsgipipe.testing._matrix import MatrixServer
from wsgipipe.testing._process import ServerProcess

pytestmark = pytest.mark.server

APPS = Path(__file__).parent / "apps"
# Larger than loopback socket buffers plus waitress's 16 MiB output buffer, so
# aborts and stalls happen while the file is still being read.
SIZE = 32 * 1024 * 1024
RELEASE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Server:
    """One column of the matrix and what we expect of it."""

    name: str
    #: How the body left: "sendfile" (the server's zero-copy path) or
    #: "python" (read in chunks, by wsgipipe or by the server's wrapper).
    via: str
    #: Whether wsgipipe's IdleTimeout can cut off a stalled reader (it needs
    #: the client socket, which only gunicorn exposes).
    idle_timeout: bool = False

    def start(self, root: Path) -> ServerProcess:
        env = {"WSGIPIPE_TEST_ROOT": str(root)}
        if self.name.startswith("gunicorn-"):
            worker = self.name.removeprefix("gunicorn-")
            # gunicorn silently turns "sync" with threads > 1 into gthread.
            threads = 1 if worker == "sync" else 4
            server = GunicornServer(
                "lifecycle_app:app", worker_class=worker, threads=threads, cwd=APPS, env=env
            )
        else:
            server = MatrixServer(self.name, "lifecycle_app:app", cwd=APPS, env=env)
        return server.start()


MATRIX = [
    Server("gunicorn-sync", via="sendfile", idle_timeout=True),
    Server("gunicorn-gthread", via="sendfile", idle_timeout=True),
    Server("gunicorn-gevent", via="python", idle_timeout=True),
    Server("waitress", via="python"),
    Server("werkzeug", via="python"),
    Server("wsgiref", via="python"),
    Server("uwsgi", via="python"),
]


def _available(server: Server) -> bool:
    if server.name == "uwsgi":
        return shutil.which("uwsgi", path=os.path.dirname(sys.executable)) is not None
    return True


@dataclass
class Running:
    spec: Server
    process: ServerProcess
    root: Path
    content: bytes

    def lines(self, name: str) -> list[str]:
        """Transfer lines for ``/<route>/<name>`` (each test uses its own name)."""
        log = self.process.log
        found = transfer_lines(log, method="GET") + transfer_lines(log, method="HEAD")
        return [line for line in found if line.split(" ", 2)[1].endswith(f"/{name}")]

    def wait_line(self, name: str, timeout: float = RELEASE_TIMEOUT) -> str:
        assert wait_until(lambda: self.lines(name), timeout), self.process.log[-3000:]
        return self.lines(name)[-1]

    def held(self) -> list[str]:
        return self.process.open_files(self.root)

    def file(self, name: str) -> str:
        """A fresh name for the test file, so each test reads its own log lines."""
        os.link(self.root / "data.bin", self.root / name)
        return name


@pytest.fixture(scope="module", params=MATRIX, ids=lambda s: s.name)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    spec: Server = request.param
    if not _available(spec):
        pytest.skip(f"{spec.name} is not installed (pip install uwsgi)")
    root = tmp_path_factory.mktemp(spec.name)
    content = os.urandom(SIZE)
    (root / "data.bin").write_bytes(content)
    process = spec.start(root)
    try:
        yield Running(spec, process, root, content)
    finally:
        process.__exit__(None, None, None)


def _get(
    server: Running, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    # A fresh connection per request: uWSGI's --http-socket does not keep alive.
    conn = http.client.HTTPConnection("127.0.0.1", server.process.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _raw(server: Running, path: str) -> socket.socket:
    return raw_request(server.process, path)


def _released_after_close(server: Running, sock: socket.socket) -> float:
    """Close the client socket; seconds until no worker holds a file under root."""
    sock.close()
    closed = time.monotonic()
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT, 0.002), server.held()
    return time.monotonic() - closed


def _report(server: Running, case: str, seconds: float) -> None:
    target = os.environ.get("WSGIPIPE_MATRIX_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"server": server.spec.name, "case": case, "s": seconds}) + "\n")


def test_full_download_is_closed_and_counted(server: Running) -> None:
    name = server.file("full.bin")
    response, body = _get(server, f"/file/{name}")
    assert response.status == 200
    assert body == server.content
    line = server.wait_line(name)
    assert f" 200 finished {SIZE}/{SIZE} B" in line
    assert f"via={server.spec.via}" in line
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT)


def test_range_sends_the_slice(server: Running) -> None:
    name = server.file("range.bin")
    response, body = _get(server, f"/file/{name}?offset=1000&length=5000")
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 1000-5999/{SIZE}"
    assert body == server.content[1000:6000]
    line = server.wait_line(name)
    assert " 206 finished 5000/5000 B" in line
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT)


def test_head_sends_no_body_and_still_closes(server: Running) -> None:
    name = server.file("head.bin")
    response, body = _get(server, f"/file/{name}", method="HEAD")
    assert response.status == 200
    assert response.getheader("Content-Length") == str(SIZE)
    assert body == b""
    assert " 200 finished " in server.wait_line(name)
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT)


def test_client_abort_mid_body_releases_the_file(server: Running) -> None:
    name = server.file("abort.bin")
    sock = _raw(server, f"/file/{name}")
    received = 0
    while received < 256 * 1024:
        received += len(sock.recv(65536))
    assert server.held(), "the file should be open while the body is being sent"
    delay = _released_after_close(server, sock)
    _report(server, "abort mid-body", delay)
    line = server.wait_line(name)
    assert " 200 aborted " in line
    assert not line.endswith(f"{SIZE}/{SIZE} B")


def test_client_abort_before_first_byte_releases_the_file(server: Running) -> None:
    name = server.file("early.bin")
    sock = _raw(server, f"/file/{name}")
    delay = _released_after_close(server, sock)
    _report(server, "abort before first byte", delay)
    assert wait_until(lambda: server.lines(name), RELEASE_TIMEOUT)
    assert " 200 aborted " in server.wait_line(name)


def test_error_before_first_byte_is_a_clean_500(server: Running) -> None:
    response, body = _get(server, "/fail-before")
    assert response.status == 500
    assert body == b"500 Internal Server Error\n"  # no traceback, no path
    line = wait_for_transfer(server.process, "/fail-before", timeout=RELEASE_TIMEOUT)
    assert " 500 finished 26/26 B" in line


def test_error_after_first_byte_aborts_the_connection(server: Running) -> None:
    name = server.file("late.bin")
    conn = http.client.HTTPConnection("127.0.0.1", server.process.port, timeout=10)
    try:
        conn.request("GET", f"/fail-after/{name}")
        response = conn.getresponse()
        assert response.status == 200
        # The body ends short of Content-Length: the client can tell it is cut.
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert len(cut.value.partial) < SIZE
    finally:
        conn.close()
    # The one chunk the source produced did go out before it failed.
    assert " 200 failed 65536/" in server.wait_line(name)
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT)


def test_stalled_reader_holds_the_file_until_it_leaves(server: Running) -> None:
    # No idle timeout in this app: the file stays open while the client
    # stalls (docs/servers.md), and is released as soon as it goes.
    name = server.file("stall.bin")
    sock = _raw(server, f"/file/{name}")
    sock.recv(1024)
    time.sleep(0.3)
    assert server.held()
    assert not server.lines(name)
    _report(server, "stalled then gone", _released_after_close(server, sock))
    assert " 200 aborted " in server.wait_line(name)


def test_idle_timeout_on_a_stalled_reader(server: Running) -> None:
    name = server.file("idle.bin")
    sock = _raw(server, f"/idle/{name}")
    sock.recv(1024)
    stalled = time.monotonic()
    if server.spec.idle_timeout:
        # 1 s without progress, then the write fails and close() releases.
        assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT, 0.01)
        _report(server, "idle timeout 1s", time.monotonic() - stalled)
        line = server.wait_line(name)
        assert " 200 aborted " in line
        assert "reason='idle timeout 1s'" in line
        sock.close()
    else:
        time.sleep(1.5)
        assert server.held(), "no idle timeout here: the stalled reader keeps the file"
        _released_after_close(server, sock)
        assert " 200 aborted " in server.wait_line(name)


def test_static_ranges_and_validators(server: Running) -> None:
    # Static picks zero-copy where it can: the slices must still be exact
    # under every server (uWSGI's wrapper would send from byte 0).
    name = server.file("static.bin")
    path = f"/static/{name}"
    response, body = _get(server, path, headers={"Range": "bytes=1000-5999"})
    assert (response.status, body) == (206, server.content[1000:6000])
    response, body = _get(server, path, headers={"Range": f"bytes=-{SIZE // 2}"})
    assert (response.status, body) == (206, server.content[SIZE // 2 :])
    etag = response.getheader("ETag")
    assert etag
    response, body = _get(server, path, headers={"If-None-Match": etag})
    assert (response.status, body) == (304, b"")
    response, body = _get(server, path, headers={"Range": "bytes=0-9,20-29"})
    assert response.status == 206
    assert server.content[0:10] in body
    assert server.content[20:30] in body
    assert wait_until(lambda: len(server.lines(name)) == 4, RELEASE_TIMEOUT)
    assert all(" finished " in line for line in server.lines(name)), server.lines(name)
    assert wait_until(lambda: not server.held(), RELEASE_TIMEOUT)


def _settled_counts(server: Running) -> dict[int, int]:
    """Descriptor counts once the connections of earlier tests are gone."""
    seen: list[dict[int, int]] = []

    def stable() -> bool:
        seen.append(server.process.fd_counts())
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    wait_until(stable, RELEASE_TIMEOUT, 0.1)
    return seen[-1]


def test_next_request_is_served_and_descriptors_are_back(server: Running) -> None:
    before = _settled_counts(server)
    for _ in range(3):
        response, body = _get(server, "/file/data.bin?offset=0&length=10")
        assert (response.status, body) == (206, server.content[:10])

    def no_growth() -> bool:
        after = server.process.fd_counts()
        return after.keys() == before.keys() and all(after[p] <= before[p] for p in before)

    assert wait_until(no_growth, RELEASE_TIMEOUT)
    assert not server.held()


def test_file_errors_leaves_exc_info_out_of_a_first_start_response() -> None:
    # uWSGI's start_response fails with SystemError when handed exc_info
    # before any response started; FileErrors answers with a fresh call.
    calls: list[tuple[str, object]] = []

    def broken(environ: object, start_response: object) -> list[bytes]:
        raise FileNotFoundError("gone")

    def start_response(status: str, headers: object, exc_info: object = None) -> object:
        calls.append((status, exc_info))
        return lambda data: None

    body = FileErrors(broken)({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, start_response)
    assert list(body) == [b"404 Not Found\n"]
    assert calls == [("404 Not Found", None)]


def test_a_server_wrapper_reading_the_stream_is_counted(tmp_path: Path) -> None:
    # wsgiref's wrapper calls read() until it returns b"": the transfer
    # record must still say how many bytes went out.
    (tmp_path / "f.bin").write_bytes(b"x" * 200_000)
    stream = FileStream(tmp_path / "f.bin", chunk_size=65536)
    environ = {"wsgi.file_wrapper": wsgiref.util.FileWrapper}
    wrapper = stream.for_server(environ)
    assert wrapper is not stream
    assert b"".join(wrapper) == b"x" * 200_000
    wrapper.close()  # type: ignore[attr-defined]
    assert (stream.outcome, stream.bytes_sent) == ("finished", 200_000)


def test_a_wrapper_read_cut_short_is_an_abort(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 200_000)
    stream = FileStream(tmp_path / "f.bin", chunk_size=65536)
    stream.read(65536)
    stream.read(65536)  # the first chunk is known to be out once the second is asked for
    stream.close()
    assert (stream.outcome, stream.bytes_sent) == ("aborted", 65536)


def test_uwsgi_never_gets_the_descriptor(tmp_path: Path) -> None:
    # uWSGI's wrapper sends from byte 0 whatever the offset: ranges would
    # get the wrong bytes (pinned under the real uWSGI above).
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    environ = {"wsgi.file_wrapper": wsgiref.util.FileWrapper, "uwsgi.version": b"2.0.31"}
    with_offset = FileStream(tmp_path / "f.bin", offset=3)
    try:
        assert with_offset.for_server(environ) is with_offset
        assert b"".join(with_offset) == b"3456789"
    finally:
        with_offset.close()


def test_a_chunk_sent_before_the_source_fails_is_counted() -> None:
    def source() -> Iterator[bytes]:
        yield b"abc"
        raise RuntimeError("broken source")

    body = Observed(source())
    assert next(body) == b"abc"
    with pytest.raises(RuntimeError):
        next(body)  # asking again means b"abc" was written
    body.close()
    assert (body.outcome, body.bytes_sent) == ("failed", 3)
