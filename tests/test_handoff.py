"""The one hand-off rule (wsgipipe._handoff), in process.

The server here does what gunicorn's ``Response.sendfile`` does with a real
socket: for an instance of its ``wsgi.file_wrapper`` whose file has a
descriptor it calls ``socket.sendfile`` from the descriptor's position
(which seeks the file object to where the kernel stopped), sends nothing for
HEAD, and iterates anything else; then it closes what the app returned.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gunicorn.http.wsgi import FileWrapper
from webtest import TestApp

from wsgipipe import FileErrors, FileStream, Static, Tee, Through, Transfer, TransferLog
from wsgipipe._handoff import FileView, observe, tracked
from wsgipipe.sinks import Capture

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SIZE = 1024 * 1024 + 123


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


class CountingWrapper(FileWrapper):  # type: ignore[misc]
    """gunicorn's wrapper, counting how many a request builds."""

    built = 0

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        CountingWrapper.built += 1
        super().__init__(filelike, blksize)


@dataclass
class Served:
    status: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    received: bytes = b""
    via_sendfile: bool = False
    error: BaseException | None = None


def serve(
    app: WSGIApplication, path: str = "/data.bin", *, method: str = "GET", client_reads: int = -1
) -> Served:
    """One request as gunicorn serves it; the client reads ``client_reads`` bytes, or all."""
    CountingWrapper.built = 0
    served = Served()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.file_wrapper": CountingWrapper,
    }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        served.status, served.headers = status, headers
        return None

    result = app(environ, start_response)
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    reader = threading.Thread(target=_read, args=(client, client_reads, served))
    reader.start()
    try:
        _send(server, result, method, served)
    except OSError as exc:
        served.error = exc  # the client went away, as gunicorn sees it
    finally:
        server.close()
        reader.join(10)
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return served


def _send(sock: socket.socket, result: Iterable[bytes], method: str, served: Served) -> None:
    length = dict(served.headers).get("Content-Length")
    if isinstance(result, FileWrapper) and _has_fileno(result.filelike):
        served.via_sendfile = True
        fd = result.filelike.fileno()
        offset = os.lseek(fd, 0, os.SEEK_CUR)  # gunicorn PR#2687: from the current offset
        count = int(length) if length is not None else os.fstat(fd).st_size - offset
        if method != "HEAD" and count:
            sock.sendfile(result.filelike, offset, count)
        return
    for chunk in result:
        if method != "HEAD":
            sock.sendall(chunk)


def _has_fileno(file: Any) -> bool:
    try:
        file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True


def _read(sock: socket.socket, limit: int, served: Served) -> None:
    got = bytearray()
    with sock:
        while limit < 0 or len(got) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    served.received = bytes(got)


def _ignore(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


# -- apps: a file the app's own way, as Flask, Django, WhiteNoise do -------------------
class Closes:
    """An app returning ``environ["wsgi.file_wrapper"](open(path))``, counting closes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.closes = 0
        self.files: list[io.BufferedReader] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        file = open(self.path, "rb")  # noqa: SIM115 - the server closes it
        self.files.append(file)
        size = os.fstat(file.fileno()).st_size
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
        wrapper = environ["wsgi.file_wrapper"](file, 4096)
        original = wrapper.close

        def close() -> None:
            self.closes += 1
            original()

        wrapper.close = close  # what Django does: its response.close closes the file
        return wrapper  # type: ignore[no-any-return]


def logged(app: WSGIApplication) -> tuple[WSGIApplication, list[Transfer]]:
    records: list[Transfer] = []
    return TransferLog(app, on_done=records.append), records


# -- a wsgipipe stream: opened once, no wrapper undone --------------------------------
@pytest.fixture
def open_calls(monkeypatch: pytest.MonkeyPatch) -> list[FileStream]:
    calls: list[FileStream] = []
    real = FileStream.open

    def counting(self: FileStream) -> FileStream:
        calls.append(self)
        return real(self)

    monkeypatch.setattr(FileStream, "open", counting)
    return calls


@pytest.mark.parametrize("tee", [False, True], ids=["plain", "tee"])
def test_a_stream_is_opened_once_per_request(
    data: Path, open_calls: list[FileStream], tee: bool
) -> None:
    inner: WSGIApplication = Static(data.parent)
    sink = Capture()
    if tee:
        inner = Tee(inner, sink)
    app, records = logged(FileErrors(inner))
    served = serve(app)
    assert served.received == data.read_bytes()
    assert len(open_calls) == 1, open_calls  # call, send and close included
    assert records[0].outcome == "finished" and records[0].bytes_sent == SIZE
    assert records[0].notes["via"] == ("python" if tee else "sendfile")


def test_a_tee_keeps_static_from_building_a_wrapper(data: Path) -> None:
    sink = Capture()
    app, _ = logged(FileErrors(Tee(Static(data.parent), sink)))
    served = serve(app)
    assert CountingWrapper.built == 0 and not served.via_sendfile
    assert bytes(sink.last.body) == served.received == data.read_bytes()
    app, _records = logged(FileErrors(Static(data.parent)))
    served = serve(app)
    assert CountingWrapper.built == 1 and served.via_sendfile


def test_a_user_app_returning_a_bare_stream_still_goes_zero_copy(data: Path) -> None:
    def bare(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(SIZE))])
        return FileStream(data)

    app, records = logged(FileErrors(bare))
    served = serve(app)
    assert served.via_sendfile and CountingWrapper.built == 1
    assert records[0].notes["via"] == "sendfile" and records[0].outcome == "finished"


# -- an app's own file wrapper ------------------------------------------------------
@pytest.mark.parametrize("errors", [False, True], ids=["TransferLog", "TransferLog+FileErrors"])
def test_an_apps_own_wrapper_is_handed_back_zero_copy(data: Path, errors: bool) -> None:
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign) if errors else foreign)
    served = serve(app)
    assert served.via_sendfile, "the server got no file wrapper: zero-copy lost"
    assert served.received == data.read_bytes()
    record = records[0]
    assert (record.outcome, record.bytes_sent, record.notes["via"]) == (
        "finished",
        SIZE,
        "sendfile",
    )
    assert foreign.closes == 1 and foreign.files[0].closed


def test_a_content_length_shorter_than_the_file_is_all_the_server_owes(data: Path) -> None:
    class Shorter(Closes):
        def __call__(
            self, environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            def shorter(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                kept = [(k, v) for k, v in headers if k != "Content-Length"]
                return start_response(status, [*kept, ("Content-Length", "1000")], exc_info)

            return super().__call__(environ, shorter)

    foreign = Shorter(data)
    app, records = logged(FileErrors(foreign))
    served = serve(app)
    assert served.via_sendfile and served.received == data.read_bytes()[:1000]
    assert (records[0].outcome, records[0].bytes_sent) == ("finished", 1000)


def test_an_aborted_sendfile_is_aborted_and_the_file_released(data: Path) -> None:
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    served = serve(app, client_reads=100_000)
    assert served.via_sendfile and served.error is not None
    record = records[0]
    assert record.outcome == "aborted", record.line()
    assert 100_000 <= record.bytes_sent < SIZE
    assert foreign.closes == 1 and foreign.files[0].closed


def test_head_through_the_wrapping_reads_nothing(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = FileView.read

    def counting(self: FileView, size: int = -1) -> bytes:
        chunk = real(self, size)
        reads.append(len(chunk))
        return chunk

    monkeypatch.setattr(FileView, "read", counting)
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    served = serve(app, method="HEAD")
    assert served.via_sendfile and reads == []
    assert records[0].outcome == "finished" and records[0].bytes_sent == 0
    assert foreign.closes == 1 and foreign.files[0].closed


def test_a_tee_reads_an_apps_own_wrapper_in_python(data: Path) -> None:
    foreign = Closes(data)
    sink = Capture()
    app, records = logged(FileErrors(Tee(foreign, sink)))
    served = serve(app)
    assert not served.via_sendfile and CountingWrapper.built == 1  # the app's own only
    assert bytes(sink.last.body) == served.received == data.read_bytes()
    assert records[0].outcome == "finished" and records[0].notes["via"] == "python"
    assert foreign.closes == 1 and foreign.files[0].closed


def test_a_layer_beneath_a_through_hands_it_the_file_bare(data: Path) -> None:
    foreign = Closes(data)
    app, records = logged(Through(FileErrors(foreign), bytes.upper, keeps_length=True))
    served = serve(app)
    assert served.received == data.read_bytes().upper()
    assert records[0].outcome == "finished" and foreign.closes == 1


def test_without_sendfile_the_server_reads_through_the_view(data: Path) -> None:
    """A server that iterates its wrapper (no sendfile) counts chunk by chunk."""
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}
    result = app(environ, _ignore)
    chunks = list(iter(result))
    getattr(result, "close")()  # noqa: B009 - the server's call
    assert b"".join(chunks) == data.read_bytes()
    assert records[0].outcome == "finished" and records[0].bytes_sent == SIZE
    assert records[0].notes["via"] == "python" and foreign.closes == 1


def test_a_client_gone_on_the_python_path_is_aborted(data: Path) -> None:
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}
    result = app(environ, _ignore)
    iterator: Iterator[bytes] = iter(result)
    next(iterator), next(iterator)  # the second request for a chunk: the first was written
    getattr(result, "close")()  # noqa: B009
    assert records[0].outcome == "aborted" and records[0].bytes_sent == 4096
    assert foreign.closes == 1 and foreign.files[0].closed


def test_a_file_that_shrank_fails_instead_of_ending_short(data: Path) -> None:
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}
    result = app(environ, _ignore)
    os.truncate(data, 10_000)
    with pytest.raises(OSError, match="shrank"):
        list(iter(result))
    getattr(result, "close")()  # noqa: B009
    assert records[0].outcome == "failed" and foreign.files[0].closed


def test_a_pipe_in_a_wrapper_is_not_a_file_view(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"piped")
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        wrapper = FileWrapper(pipe)
        handoff = observe({"wsgi.file_wrapper": FileWrapper}, wrapper)
        assert not isinstance(handoff.body, FileView) and handoff.server is handoff.body
        assert b"".join(handoff.server) == b"piped"
        handoff.body.close()
    assert pipe.closed


def test_tracked_finds_the_body_in_a_wrapper(data: Path) -> None:
    stream = FileStream(data)
    wrapper = FileWrapper(stream)
    assert tracked(wrapper) is stream and tracked(stream) is stream and tracked([b""]) is None
    stream.close()


def test_under_webtest_lint_the_view_is_read_and_closed(data: Path) -> None:
    foreign = Closes(data)
    app, records = logged(FileErrors(foreign))
    response = TestApp(app, lint=True, extra_environ={"wsgi.file_wrapper": FileWrapper}).get(
        "/data.bin"
    )
    assert response.body == data.read_bytes()
    assert records[0].outcome == "finished" and foreign.closes == 1
