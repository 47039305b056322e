"""Wrapping foreign apps keeps zero-copy: the wrap matrix under real gunicorn.

Flask ``send_file``, Django ``FileResponse``, WhiteNoise and werkzeug's
``SharedDataMiddleware`` each hand gunicorn their own ``wsgi.file_wrapper``.
Wrapped in ``TransferLog`` or ``TransferLog(FileErrors(...))`` (the app is
``tests/apps/wrap_app.py``), under the gthread and sync workers:

* strace sees the download go out with ``sendfile`` (a handful of ``sendto``
  for the headers, not thousands for the body), and the transfer line says
  ``finished`` with every byte and ``via=sendfile``;
* a client that hangs up mid-download gives ``aborted``, and the worker holds
  no descriptor of the file afterwards (``/proc/<pid>/fd``);
* HEAD reads no file bytes (strace: the worker's ``read`` calls add up to
  nothing like the file).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from wsgipipe.testing import (
    GunicornServer,
    TraceUnavailable,
    trace_syscalls,
    transfer_lines,
    wait_for_transfer,
    wait_until,
)

pytestmark = pytest.mark.server

APPS = Path(__file__).parent / "apps"
SIZE = 8 * 1024 * 1024  # larger than what loopback buffers take before an abort
FOREIGN = ["flask", "django", "whitenoise", "shared"]
WRAPPINGS = ["tl", "tlfe"]


class Running:
    def __init__(self, server: GunicornServer, root: Path, digest: str) -> None:
        self.server = server
        self.root = root
        self.digest = digest
        self.names = iter(range(1_000_000))

    @property
    def pid(self) -> int:
        return self.server.worker_pids()[0]

    def fresh(self, app: str) -> str:
        """A new file name (hard link to the data), so each test reads its own line.

        WhiteNoise indexes its files at start-up, so it always gets ``data.bin``.
        """
        if app == "whitenoise":
            return "data.bin"
        name = f"f{next(self.names)}.bin"
        os.link(self.root / "data.bin", self.root / name)
        return name


@pytest.fixture(scope="module", params=["gthread", "sync"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    root = tmp_path_factory.mktemp(f"wrap-{request.param}")
    data = os.urandom(SIZE)
    (root / "data.bin").write_bytes(data)
    threads = 4 if request.param == "gthread" else 1
    server = GunicornServer(
        "wrap_app:app",
        worker_class=request.param,
        threads=threads,
        cwd=APPS,
        env={"WSGIPIPE_TEST_ROOT": str(root)},
    )
    with server:
        running = Running(server, root, hashlib.sha256(data).hexdigest())
        for app in FOREIGN:  # first requests import lazily: keep that out of the traces
            for wrapping in ["raw", *WRAPPINGS]:
                _download(running, f"/{wrapping}/{app}/data.bin")
        yield running


def _download(running: Running, path: str, method: str = "GET") -> bytes:
    """The body; returns once the server has closed the response, not just sent it.

    A HEAD response is complete for the client before the server has called
    ``close()`` (and before it would have read a file in Python): a second
    request on the same connection is only read after that.
    """
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:200])
        conn.request("GET", "/after")
        conn.getresponse().read()
        return body
    finally:
        conn.close()


def _calls(trace: Path, name: str) -> list[str]:
    return [line for line in trace.read_text().splitlines() if re.search(rf"\b{name}\(", line)]


@contextmanager
def _traced(running: Running, tmp_path: Path, syscalls: list[str]) -> Iterator[Path]:
    try:
        with trace_syscalls(running.pid, syscalls, tmp_path / "trace.txt") as trace:
            yield trace
    except TraceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("wrapping", ["raw", *WRAPPINGS])
@pytest.mark.parametrize("app", FOREIGN)
def test_a_download_goes_out_with_sendfile(
    running: Running, tmp_path: Path, app: str, wrapping: str
) -> None:
    path = f"/{wrapping}/{app}/{running.fresh(app)}"
    count = len(transfer_lines(running.server.log, path))
    with _traced(running, tmp_path, ["sendfile", "sendto", "sendmsg", "write"]) as trace:
        body = _download(running, path)
    assert hashlib.sha256(body).hexdigest() == running.digest
    sendfiles, sends = _calls(trace, "sendfile"), _calls(trace, "sendto") + _calls(trace, "sendmsg")
    assert 1 <= len(sendfiles) <= 64, sendfiles[:10]
    assert len(sends) < 8, f"{len(sends)} sendto/sendmsg: the body went through Python"
    if wrapping != "raw":
        line = wait_for_transfer(running.server, path, count=count + 1)
        assert f" 200 finished {SIZE}/{SIZE} B " in line and "via=sendfile" in line, line


@pytest.mark.parametrize("wrapping", WRAPPINGS)
@pytest.mark.parametrize("app", FOREIGN)
def test_a_client_hanging_up_is_aborted_and_the_file_released(
    running: Running, app: str, wrapping: str
) -> None:
    name = running.fresh(app)
    path = f"/{wrapping}/{app}/{name}"
    count = len(transfer_lines(running.server.log, path))
    with socket.socket() as sock:
        # A small receive window: the server blocks in sendfile long before the end.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", running.server.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        got = 0
        while got < 64 * 1024:
            got += len(sock.recv(16384))
        # RST rather than FIN, as a browser tab closed mid-download does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    line = wait_for_transfer(running.server, path, count=count + 1, timeout=10)
    assert " 200 aborted " in line and "via=sendfile" in line, line
    sent = int(line.split(" aborted ", 1)[1].split("/", 1)[0])
    assert 0 < sent < SIZE, line
    target = str(running.root / name)
    assert wait_until(lambda: target not in running.server.open_files(running.root), 5), (
        running.server.open_files(running.root)
    )


@pytest.mark.parametrize("wrapping", ["raw", *WRAPPINGS])
@pytest.mark.parametrize("app", FOREIGN)
def test_head_reads_no_file_bytes(
    running: Running, tmp_path: Path, app: str, wrapping: str
) -> None:
    path = f"/{wrapping}/{app}/{running.fresh(app)}"
    _download(running, path, method="HEAD")  # a first HEAD may still import something
    count = len(transfer_lines(running.server.log, path, method="HEAD"))
    with _traced(running, tmp_path, ["read", "pread64", "sendfile"]) as trace:
        assert _download(running, path, method="HEAD") == b""
    read = sum(
        int(m.group(1)) for m in re.finditer(r"read6?4?\(.*= (\d+)$", trace.read_text(), re.M)
    )
    assert read < 64 * 1024, f"{read} bytes read for a HEAD of {SIZE}"
    if wrapping != "raw":
        line = wait_for_transfer(running.server, path, count=count + 1, method="HEAD")
        assert f" 200 finished 0/{SIZE} B " in line, line
