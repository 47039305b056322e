"""ZipStream and zip_response: a folder as a zip built while it is sent.

Every archive is checked by reading it back with the stdlib's zipfile (and
Info-ZIP's ``unzip -t`` where installed), never against bytes we wrote by hand.
"""

from __future__ import annotations

import gzip
import http.client
import io
import os
import shutil
import subprocess
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import server_checks
from webtest import TestApp

from wsgipipe import FileChanged, FileErrors, Tee, TransferLog, ZipStream, sinks, zip_response
from wsgipipe import _zip_format as fmt
from wsgipipe.testing import (
    GunicornServer,
    TransferRecorder,
    open_files,
    raw_request,
    wait_for_transfer,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "gunicorn.conf.py")
MIB = 1024 * 1024


def make_tree(root: Path) -> dict[str, bytes]:
    """A folder with nesting, a non-ASCII name, an empty file and things to refuse."""
    files = {
        "a.txt": b"hello\n",
        "empty": b"",
        "sub/b.bin": os.urandom(300_000),
        "sub/deeper/ü n.txt": "grüße\n".encode(),
    }
    for name, data in files.items():
        (root / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_bytes(data)
    (root / "docs" / ".git").mkdir()
    (root / "docs" / ".git" / "config").write_bytes(b"secret")
    (root / "docs" / ".env").write_bytes(b"secret")
    (root / "docs" / "passwd").symlink_to("/etc/passwd")  # leads out of the root
    (root / "docs" / "inside").symlink_to(root / "docs" / "a.txt")  # stays inside
    files["inside"] = files["a.txt"]
    return files


def read_back(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def unzip_ok(data: bytes, tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        return  # .ci/system-deps installs it; zipfile already checked the archive
    path = tmp_path / "check.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def app_for(root: Path, **options: object) -> TestApp:
    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return zip_response(environ, start_response, root, **options)  # type: ignore[arg-type]

    return TestApp(app, lint=True)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "root"
    root.mkdir()
    return root, make_tree(root)


# -- in process ------------------------------------------------------------------------
def test_folder_archive_reads_back_exactly(
    tree: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = tree
    response = app_for(root, folder="docs").get("/")
    assert response.headers["Content-Type"] == "application/zip"
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert 'filename="docs.zip"' in response.headers["Content-Disposition"]
    assert read_back(response.body) == files  # hidden entries and the link out are skipped
    unzip_ok(response.body, tmp_path)


def test_works_under_file_errors_tee_and_transfer_log(
    tree: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = tree
    digest = sinks.Digest("sha256")
    recorder = TransferRecorder()

    def app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
        return zip_response(environ, start_response, root, folder="docs")  # type: ignore[arg-type]

    client = TestApp(TransferLog(FileErrors(Tee(app, digest)), on_done=recorder), lint=True)
    body = client.get("/").body
    assert read_back(body) == files
    assert recorder.last.outcome == "finished" and recorder.last.bytes_sent == len(body)


def test_same_tree_same_bytes_and_etag(tree: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = tree
    client = app_for(root, folder="docs")
    first, second = client.get("/"), client.get("/")
    assert first.body == second.body
    assert first.headers["ETag"] == second.headers["ETag"]
    (root / "docs" / "a.txt").write_bytes(b"changed\n")
    assert client.get("/").headers["ETag"] != first.headers["ETag"]


@pytest.mark.parametrize("zip64_at", [fmt.ZIP64_LIMIT, 1])
def test_ranges_are_slices_of_the_archive(
    tree: tuple[Path, dict[str, bytes]], zip64_at: int
) -> None:
    root, _ = tree
    whole = b"".join(ZipStream(root, folder="docs", zip64_at=zip64_at))
    size = len(whole)
    for start, stop in [(0, 10), (40, 200_000), (size - 100, size), (5, size), (size - 1, size)]:
        part = ZipStream(root, folder="docs", zip64_at=zip64_at)
        part.select(start, stop)
        assert b"".join(part) == whole[start:stop]
        part.close()


def test_range_requests_and_validators(tree: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = tree
    client = app_for(root, folder="docs")
    full = client.get("/")
    etag, size = full.headers["ETag"], len(full.body)
    part = client.get("/", headers={"Range": "bytes=1000-"}, status=206)
    assert part.body == full.body[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"
    resumed = client.get("/", headers={"Range": "bytes=-64", "If-Range": etag}, status=206)
    assert resumed.body == full.body[-64:]
    stale = client.get("/", headers={"Range": "bytes=0-9", "If-Range": '"other"'}, status=200)
    assert stale.body == full.body
    client.get("/", headers={"If-None-Match": etag}, status=304)
    client.get("/", headers={"Range": f"bytes={size}-"}, status=416)
    head = client.head("/")
    assert head.headers["Content-Length"] == str(size) and head.body == b""


def test_zip64_structures_read_back(tree: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    # The ZIP64 trigger lowered to 1 byte: every size and offset goes through
    # the ZIP64 extra fields and end records (the real 4 GiB run is below).
    root, files = tree
    data = b"".join(ZipStream(root, folder="docs", zip64_at=1))
    assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]
    assert read_back(data) == files
    unzip_ok(data, tmp_path)


def test_plan_switches_to_zip64_past_4_gib() -> None:
    big = 4 * 1024**3 + 1
    plan = fmt.plan([("huge.bin", big, 0.0, 0o100644), ("after.txt", 6, 0.0, 0o100644)])
    huge, after = plan.entries
    assert huge.zip64 and not after.zip64
    assert after.offset > fmt.ZIP64_LIMIT
    assert fmt.central_entry(after, 0).endswith(
        b"\x01\x00\x08\x00" + after.offset.to_bytes(8, "little")
    )
    assert plan.end.startswith(b"PK\x06\x06")
    assert plan.size == plan.central_offset + plan.central_size + 56 + 20 + 22


def test_names_are_checked_like_static(tree: tuple[Path, dict[str, bytes]]) -> None:
    root, files = tree
    client = app_for(root, names=["docs/a.txt", "docs/sub/b.bin"])
    assert read_back(client.get("/").body) == {
        "docs/a.txt": files["a.txt"],
        "docs/sub/b.bin": files["sub/b.bin"],
    }
    for bad in (["../etc/passwd"], ["docs/.env"], ["/etc/passwd"], ["docs/passwd"], ["nope"]):
        app_for(root, names=bad).get("/", status=404)
    for folder in ("..", "docs/.git", "missing", "docs/a.txt"):
        app_for(root, folder=folder).get("/", status=404)


def test_a_member_changed_after_listing_fails_the_transfer(
    tree: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = tree
    body = ZipStream(root, folder="docs")
    first = next(body)
    (root / "docs" / "sub" / "b.bin").write_bytes(b"shorter")
    with pytest.raises(FileChanged):
        for _ in body:
            pass
    body.close()
    assert first.startswith(b"PK\x03\x04")
    assert body.outcome == "failed"
    assert not open_files("self", root)


def test_close_mid_archive_closes_the_member(tree: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = tree
    body = ZipStream(root, folder="docs", chunk_size=4096)
    for _chunk in body:
        if open_files("self", root):
            break  # inside a member now
    assert open_files("self", root)
    body.close()
    assert open_files("self", root) == []
    assert body.outcome == "aborted"


# -- under gunicorn ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GunicornServer, Path]]:
    root = tmp_path_factory.mktemp("zip-root")
    make_tree(root)
    (root / "many").mkdir()
    for i in range(12):
        (root / "many" / f"part{i:02}.bin").write_bytes(os.urandom(2 * MIB))
    (root / "big.html").write_bytes(b"<p>big</p>\n")  # the example app makes what is missing
    (root / "big.bin").write_bytes(b"\0")
    env = {"WSGIPIPE_ROOT": str(root), "WSGIPIPE_IDLE_TIMEOUT": "5"}
    with GunicornServer(
        "examples.app:app", worker_class="gthread", threads=4, cwd=REPO, env=env, config=CONFIG
    ) as server:
        yield server, root


def fetch(server: GunicornServer, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    return server_checks.fetch(server, path, timeout=30)


@pytest.mark.server
def test_zip_route_equals_what_zipfile_reads(served: tuple[GunicornServer, Path]) -> None:
    server, root = served
    response, body = fetch(server, "/zip/docs")
    assert response.status == 200
    assert int(response.getheader("Content-Length") or -1) == len(body)
    expected = {
        str(p.relative_to(root / "docs")): p.read_bytes()
        for p in (root / "docs").rglob("*")
        if p.is_file() and ".git" not in p.parts and p.name not in (".env", "passwd")
    }
    assert read_back(body) == expected
    assert " 200 finished " in wait_for_transfer(server, "/zip/docs")


@pytest.mark.server
def test_abort_mid_archive_closes_every_member(served: tuple[GunicornServer, Path]) -> None:
    server, root = served
    with raw_request(server, "/zip/many") as sock:
        got = b""
        while len(got) < 5 * MIB:
            data = sock.recv(MIB)
            assert data, got[:200]  # the server closed early: show what it said
            got += data
        assert server.open_files(root)  # a member is open while the archive goes out
    assert wait_until(lambda: not server.open_files(root), 1.0), server.open_files(root)
    assert " 200 aborted " in wait_for_transfer(server, "/zip/many")


@pytest.mark.server
def test_gzip_route_streams_through_the_process(served: tuple[GunicornServer, Path]) -> None:
    server, root = served
    response, body = fetch(server, "/gzip/many/part00.bin")
    assert response.status == 200
    assert gzip.decompress(body) == (root / "many" / "part00.bin").read_bytes()
    for refused in ("/gzip/../etc/passwd", "/gzip/docs/.env", "/gzip/docs/passwd", "/gzip/docs"):
        assert fetch(server, refused)[0].status == 404


@pytest.mark.server
def test_real_zip64_member_over_4_gib(served: tuple[GunicornServer, Path], tmp_path: Path) -> None:
    server, root = served
    huge = root / "huge"
    huge.mkdir(exist_ok=True)
    with (huge / "sparse.bin").open("wb") as f:
        f.truncate(4 * 1024**3 + 4096)
    (huge / "tail.txt").write_bytes(b"after the big one\n")
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/zip/huge")
    response = conn.getresponse()
    length = int(response.getheader("Content-Length") or 0)
    copy = tmp_path / "huge.zip"
    position = 0
    with copy.open("wb") as out:
        # A sparse copy: zero chunks are skipped with a seek, the rest written.
        while chunk := response.read(MIB):
            if chunk == bytes(len(chunk)):
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
            position += len(chunk)
        out.truncate(position)
    conn.close()
    took = time.monotonic() - started
    assert position == length
    with zipfile.ZipFile(copy) as archive:
        big, tail = archive.infolist()
        assert (big.filename, big.file_size) == ("sparse.bin", 4 * 1024**3 + 4096)
        assert _zero_crc(big.file_size) == big.CRC  # what was read from the sparse file
        assert archive.read(tail) == b"after the big one\n"
    print(f"4 GiB archive through gunicorn in {took:.1f}s")


def _zero_crc(size: int) -> int:
    crc, block = 0, bytes(MIB)
    for _ in range(size // MIB):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(size % MIB), crc)
