"""A file rewritten under the server's feet never splices two responses together.

A writer thread shrinks the file (``ftruncate``) and regrows it while
clients send pipelined request pairs on one connection each. Each reply is
parsed strictly by Content-Length: after the first body, the connection
must either end or carry a second response starting with ``HTTP/1.1 ``.
Anything else means a short body was left on a kept-alive connection and
the next response landed inside it (RFC 9112 §6.3: a short body is an
incomplete message and the connection must close).

Runs under real gunicorn, sync and gthread (and the offloading worker when
it is installed), through Static, so full bodies go out with sendfile.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wsgipipe import FileChanged, FileStream, HTTPError
from wsgipipe.testing import GunicornServer

pytestmark = pytest.mark.server

SIZE = 4 * 1024 * 1024  # large enough that a send takes a while
SHORT = SIZE // 5
SECONDS = float(os.environ.get("WSGIPIPE_SPLICE_SECONDS", "6"))
CLIENTS = 3

APP = """
import os
from wsgipipe import Static, TransferLog
app = TransferLog(Static(os.environ["SPLICE_ROOT"]))
"""

WORKERS = ["sync", "gthread"]
try:
    from wsgipipe.gunicorn import OffloadWorker  # noqa: F401
except ImportError:
    pass
else:
    WORKERS.append("wsgipipe.gunicorn.OffloadWorker")


class TestShortSendsAtClose:
    """What close() concludes from how far the kernel got (socket.sendfile's seek)."""

    def test_shrunk_and_regrown_before_close_still_fails(self, tmp_path: Path) -> None:
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(200_000))
        stream = FileStream(path).open()
        os.truncate(path, 60_000)
        stream.seek(60_000)  # socket.sendfile met end of file and stopped there
        os.truncate(path, 200_000)  # and the file is whole again by close()
        with pytest.raises(FileChanged):
            stream.close()
        assert stream.outcome == "failed" and stream.bytes_sent == 60_000

    def test_nothing_sent_and_file_rewritten_fails(self, tmp_path: Path) -> None:
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(200_000))
        stream = FileStream(path).open()
        os.truncate(path, 0)  # sendfile sent nothing, so it never seeks
        os.truncate(path, 200_000)
        with pytest.raises(FileChanged):
            stream.close()

    def test_short_send_that_failed_is_an_abort(self, tmp_path: Path) -> None:
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(200_000))
        stream = FileStream(path).open()
        try:
            try:
                raise BrokenPipeError  # the client left in the middle of sendfile
            finally:
                stream.seek(60_000)
                stream.close()  # the server closes while the error goes up
        except BrokenPipeError:
            pass
        assert stream.outcome == "aborted" and stream.bytes_sent == 60_000

    def test_unchanged_file_closed_unsent_is_an_abort(self, tmp_path: Path) -> None:
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(200_000))
        stream = FileStream(path).open()
        stream.close()
        assert stream.outcome == "aborted"

    def test_first_read_of_a_shrunk_file_can_still_be_a_500(self, tmp_path: Path) -> None:
        path = tmp_path / "f.bin"
        path.write_bytes(os.urandom(200_000))
        stream = FileStream(path).open()
        os.truncate(path, 0)
        # Not an OSError: gunicorn answers other errors before the first byte with a 500.
        with pytest.raises(HTTPError) as info:
            next(stream)
        assert not isinstance(info.value, OSError)
        assert isinstance(info.value.__cause__, FileChanged)
        assert info.value.status_hint == 500
        stream.close()
        assert stream.outcome == "failed" and isinstance(stream.error, FileChanged)


@dataclass
class Tally:
    pairs: int = 0
    complete: int = 0  # both responses arrived whole
    cut: int = 0  # the connection closed early: the honest ending
    short: int = 0  # of which the first body was short (the rewrite hit a transfer)
    empty: int = 0  # closed before any response: a file changed before the first byte
    spliced: list[bytes] = field(default_factory=list)


def split_response(data: bytes) -> tuple[bytes, bytes, bool]:
    """(head+body, rest, whole): one response taken strictly by Content-Length."""
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b"", False
    head = data[:end].decode("latin-1").lower().split("\r\n")
    lengths = [int(line.split(":", 1)[1]) for line in head if line.startswith("content-length:")]
    assert len(lengths) == 1, head
    stop = end + 4 + lengths[0]
    return data[:stop], data[stop:], len(data) >= stop


def classify(data: bytes, tally: Tally) -> None:
    tally.pairs += 1
    if not data:
        tally.empty += 1
        return
    first, rest, whole = split_response(data)
    if not whole:
        tally.cut += 1
        tally.short += 1
        return
    if not rest:
        tally.cut += 1  # closed after the first response: the second was never answered
        return
    if not rest.startswith(b"HTTP/1.1 "):
        tally.spliced.append(first[-64:] + b" | " + rest[:64])
        return
    _, extra, whole = split_response(rest)
    assert not extra, "bytes after the last response on a Connection: close request"
    if whole:
        tally.complete += 1
    else:
        tally.cut += 1


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def pipelined_pair(port: int) -> bytes:
    one = b"GET /file.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    two = b"GET /file.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(one + two)
        return read_all(sock)


def rewrite(path: Path, stop: threading.Event) -> None:
    # Shrink and regrow in place, as a rewrite, cp or log rotation would.
    fd = os.open(path, os.O_WRONLY)
    try:
        while not stop.is_set():
            os.ftruncate(fd, SHORT)
            time.sleep(0.0005)
            os.ftruncate(fd, SIZE)
            time.sleep(0.002)
    finally:
        os.close(fd)


def _path_with(directory: Path) -> str:
    return os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))


@pytest.mark.parametrize("worker", WORKERS)
def test_rewritten_file_never_splices_pipelined_responses(tmp_path: Path, worker: str) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(SIZE))
    (tmp_path / "app.py").write_text(APP)
    server = GunicornServer(
        "app:app",
        worker_class=worker,
        threads=4,
        cwd=tmp_path,
        env={"SPLICE_ROOT": str(tmp_path), "PYTHONPATH": _path_with(tmp_path)},
    )
    tally = Tally()
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        while time.monotonic() < deadline:
            data = pipelined_pair(server.port)
            with lock:
                classify(data, tally)

    with server:
        writer = threading.Thread(target=rewrite, args=(path, stop))
        writer.start()
        try:
            clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(SECONDS + 30)
        finally:
            stop.set()
            writer.join(5)
        log = server.log
    print(
        f"{worker}: {tally.pairs} pairs, {tally.complete} complete, {tally.cut} cut, "
        f"{tally.short} short, {tally.empty} empty, {len(tally.spliced)} spliced"
    )
    assert tally.pairs >= 20, log[-2000:]
    assert tally.spliced == [], (
        f"{len(tally.spliced)} of {tally.pairs} spliced: {tally.spliced[:3]}"
    )
    # A file that changed before the first byte gets a 500, never an empty reply.
    assert tally.empty == 0
    # The rewrite really did hit transfers: some first bodies came out short.
    assert tally.short > 0
