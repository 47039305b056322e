"""FileStream: the close() contract in every state, exact lengths, release at EOF."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from wsgiref.util import FileWrapper

import pytest

from wsgipipe import FileChanged, FileStream
from wsgipipe.testing import open_files


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(200_000))
    return path


def held(path: Path) -> bool:
    return str(path) in open_files(under=path.parent)


class TestCloseInEveryState:
    def test_before_open(self, data: Path) -> None:
        stream = FileStream(data)
        stream.close()
        assert stream.outcome == "aborted"
        assert not held(data)

    def test_after_open_nothing_read(self, data: Path) -> None:
        stream = FileStream(data).open()
        assert held(data)
        stream.close()
        assert not held(data)
        assert stream.outcome == "aborted"
        assert stream.bytes_sent == 0

    def test_mid_stream(self, data: Path) -> None:
        stream = FileStream(data, chunk_size=1000)
        first = next(stream)
        next(stream)
        assert len(first) == 1000 and held(data)
        stream.close()
        assert not held(data)
        assert stream.outcome == "aborted"
        assert stream.bytes_sent == 1000  # the second chunk was never confirmed

    def test_at_eof_file_released_before_close(self, data: Path) -> None:
        stream = FileStream(data)
        body = b"".join(stream)
        assert body == data.read_bytes()
        assert not held(data), "released at end of file, before the server's close()"
        assert stream.outcome == "finished" and not stream.closed
        stream.close()
        assert stream.outcome == "finished"
        assert stream.bytes_sent == len(body)

    def test_close_twice_runs_callbacks_once(self, data: Path) -> None:
        calls: list[str | None] = []
        stream = FileStream(data)
        stream.on_close(lambda s: calls.append(s.outcome))
        stream.close()
        stream.close()
        assert calls == ["aborted"]

    def test_callback_added_after_close_runs_at_once(self, data: Path) -> None:
        stream = FileStream(data)
        stream.close()
        seen: list[object] = []
        stream.on_close(seen.append)
        assert seen == [stream]

    def test_callback_errors_do_not_skip_others_or_the_file(self, data: Path) -> None:
        ran: list[int] = []

        def boom(_: object) -> None:
            raise RuntimeError("first")

        stream = FileStream(data).open()
        stream.on_close(boom)
        stream.on_close(lambda _: ran.append(1))
        with pytest.raises(RuntimeError, match="first"):
            stream.close()
        assert ran == [1]
        assert not held(data)

    def test_owned_file_object_closed_even_if_never_opened(self, data: Path) -> None:
        f = data.open("rb")
        FileStream(f).close()
        assert f.closed

    def test_concurrent_close_is_safe(self, data: Path) -> None:
        calls: list[int] = []
        stream = FileStream(data).open()
        stream.on_close(lambda _: calls.append(1))
        threads = [threading.Thread(target=stream.close) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert calls == [1]


class TestShape:
    def test_truthy_without_len(self, data: Path) -> None:
        stream = FileStream(data)
        assert bool(stream) is True
        assert not hasattr(stream, "__len__")
        empty = data.parent / "empty"
        empty.write_bytes(b"")
        with FileStreamClosing(FileStream(empty)) as s:
            assert bool(s) is True
            assert list(s) == []

    def test_never_yields_empty_chunks(self, tmp_path: Path) -> None:
        r, w = os.pipe()
        os.write(w, b"abc")
        os.close(w)
        stream = FileStream(os.fdopen(r, "rb"))
        chunks = list(stream)
        stream.close()
        assert chunks == [b"abc"]

    def test_size_from_the_open_descriptor(self, data: Path) -> None:
        stream = FileStream(data)
        assert stream.size == 200_000
        assert stream.stat is not None and stream.stat.st_size == 200_000
        stream.close()

    def test_slice(self, data: Path) -> None:
        stream = FileStream(data, offset=10, length=100)
        assert stream.size == 100
        assert stream.file_size == 200_000
        assert b"".join(stream) == data.read_bytes()[10:110]
        stream.close()
        assert stream.outcome == "finished"

    def test_length_past_end_is_capped(self, data: Path) -> None:
        stream = FileStream(data, offset=199_990, length=100)
        assert stream.size == 10
        stream.close()

    @pytest.mark.parametrize("kwargs", [{"offset": -1}, {"length": -1}, {"chunk_size": 0}])
    def test_bad_arguments(self, data: Path, kwargs: dict[str, int]) -> None:
        with pytest.raises(ValueError):
            FileStream(data, **kwargs)

    def test_missing_file_raises_at_open_and_close_is_safe(self, tmp_path: Path) -> None:
        stream = FileStream(tmp_path / "nope")
        with pytest.raises(FileNotFoundError):
            stream.open()
        stream.close()
        assert stream.outcome == "aborted"

    def test_directory_raises_at_open(self, tmp_path: Path) -> None:
        stream = FileStream(tmp_path)
        with pytest.raises(IsADirectoryError):
            next(stream)
        stream.close()
        assert stream.outcome == "failed"

    def test_fifo_does_not_hang_open(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        stream = FileStream(fifo).open()  # would block forever without O_NONBLOCK
        assert stream.is_regular is False
        assert stream.size is None
        stream.close()


class TestFileChangesWhileStreaming:
    def test_growth_sends_exactly_the_announced_length(self, data: Path) -> None:
        stream = FileStream(data, chunk_size=50_000)
        announced = stream.size
        chunks = [next(stream)]
        with data.open("ab") as f:
            f.write(b"x" * 100_000)
        chunks += list(stream)
        stream.close()
        assert sum(map(len, chunks)) == announced
        assert stream.outcome == "finished"

    def test_shrink_raises_so_the_server_aborts(self, data: Path) -> None:
        stream = FileStream(data, chunk_size=50_000)
        next(stream)
        os.truncate(data, 60_000)
        with pytest.raises(FileChanged) as info:
            list(stream)
        assert info.value.expected == 200_000
        assert stream.outcome == "failed"
        assert not held(data), "released as soon as the failure is known"
        stream.close()  # no second raise from close() on the iteration path
        assert stream.outcome == "failed"

    def test_shrink_seen_at_close_on_the_sendfile_path(self, data: Path) -> None:
        # Under sendfile the kernel stops early and reports nothing; close()
        # must notice and raise so that gunicorn drops the connection.
        stream = FileStream(data).open()
        stream.seek(60_000)
        os.truncate(data, 60_000)
        with pytest.raises(FileChanged):
            stream.close()
        assert stream.outcome == "failed"
        assert not held(data)


class TestFileObjectFace:
    def test_sendfile_progress_is_learned_from_seek(self, data: Path) -> None:
        stream = FileStream(data, offset=100).open()
        assert stream.tell() == 100
        with pytest.raises(BrokenPipeError):
            try:
                raise BrokenPipeError  # the client left during sendfile...
            finally:
                stream.seek(100 + 5000)  # ...which seeks to where it got
                assert stream.bytes_sent == 5000
                assert stream.via == "sendfile"
                stream.close()
        assert stream.outcome == "aborted"

    def test_complete_sendfile_finishes(self, data: Path) -> None:
        stream = FileStream(data).open()
        stream.seek(200_000)
        stream.close()
        assert stream.outcome == "finished"
        assert stream.bytes_sent == 200_000

    def test_read_never_passes_the_slice(self, data: Path) -> None:
        stream = FileStream(data, offset=0, length=10).open()
        assert stream.read(1000) == data.read_bytes()[:10]
        assert stream.read(1000) == b""
        stream.close()

    def test_for_server_uses_the_file_wrapper_for_regular_files(self, data: Path) -> None:
        stream = FileStream(data, offset=7)
        served = stream.for_server({"wsgi.file_wrapper": FileWrapper})
        assert isinstance(served, FileWrapper)
        assert served.filelike is stream
        assert os.lseek(stream.fileno(), 0, os.SEEK_CUR) == 7  # where gunicorn starts
        assert b"".join(served) == data.read_bytes()[7:]
        served.close()
        assert stream.outcome == "finished" and stream.via == "python"

    def test_for_server_without_wrapper_or_when_disabled(self, data: Path) -> None:
        stream = FileStream(data)
        assert stream.for_server({}) is stream
        off = FileStream(data, zero_copy=False)
        assert off.for_server({"wsgi.file_wrapper": FileWrapper}) is off
        stream.close()
        off.close()

    @pytest.mark.parametrize("kind", ["bytesio", "pipe", "proc", "empty"])
    def test_non_regular_sources_fall_back_to_reading(self, kind: str, tmp_path: Path) -> None:
        stream = _source(kind, tmp_path)
        assert stream.for_server({"wsgi.file_wrapper": FileWrapper}) is stream
        body = b"".join(stream)
        stream.close()
        assert stream.outcome == "finished"
        assert (len(body) > 0) == (kind != "empty")


def _source(kind: str, tmp_path: Path) -> FileStream:
    if kind == "bytesio":
        return FileStream(io.BytesIO(b"hello" * 1000))
    if kind == "pipe":
        r, w = os.pipe()
        os.write(w, b"piped")
        os.close(w)
        return FileStream(os.fdopen(r, "rb"))
    if kind == "proc":
        return FileStream("/proc/self/status")  # st_size is 0, content is not
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    return FileStream(empty)


class FileStreamClosing:
    def __init__(self, stream: FileStream) -> None:
        self.stream = stream

    def __enter__(self) -> FileStream:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
