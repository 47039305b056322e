"""Static under gunicorn answers like nginx: the same cases, the same answers.

One directory is served by a real nginx (Debian's package, its own config
on 127.0.0.1) and by :class:`~wsgipipe.Static` under a real gunicorn. Each
case (ranges single, multiple, suffix, unsatisfiable and malformed; If-Range
with dates and strong or weak tags; If-None-Match and If-Modified-Since and
their precedence; HEAD variants; the header sets of 304 and 416) goes to
both as raw bytes, and status, Content-Length, Content-Range and body must
agree. Validators are each server's own (nginx's ETag is not ours). Where
the answers differ on purpose, ``DIFFERENCES`` says what each server sends
and docs/static.md says why.

REDbot (``pip install redbot``) then checks a small, a medium and a tiny
file served by Static and must report no BAD or WARN note, except the one
nginx draws too (see ``test_redbot``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from werkzeug.http import http_date, parse_date

from wsgipipe.testing import GunicornServer
from wsgipipe.testing._matrix import Nginx, nginx_binary

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (.ci/system-deps)"),
]

MEDIUM = bytes(range(256)) * 800  # 204800 bytes: more than one chunk, sent with sendfile
TINY = b"tiny file\n"  # 10 bytes: smaller than any range REDbot asks for
SMALL = b"<!doctype html><title>small</title><p>" + b"small page. " * 300 + b"\n"
SIZE = len(MEDIUM)

APP = """
import os
from wsgipipe import Static
app = Static(os.environ["CONFORMANCE_ROOT"])
"""


@dataclass(frozen=True)
class Case:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    path: str = "/medium.bin"


#: {etag} and {last} are filled with the server's own validators, {older} and
#: {newer} with dates an hour before and after Last-Modified.
CASES = [
    Case("plain"),
    Case("first byte", {"Range": "bytes=0-0"}),
    Case("first hundred", {"Range": "bytes=0-99"}),
    Case("middle over a chunk", {"Range": "bytes=60000-70000"}),
    Case("open ended", {"Range": "bytes=100-"}),
    Case("whole file open ended", {"Range": "bytes=0-"}),
    Case("past the end", {"Range": f"bytes=0-{SIZE * 2}"}),
    Case("suffix", {"Range": "bytes=-100"}),
    Case("last byte", {"Range": "bytes=-1"}),
    Case("suffix longer than the file", {"Range": f"bytes=-{SIZE * 2}"}),
    Case("two ranges", {"Range": "bytes=0-0,200-299"}),
    Case("three ranges", {"Range": "bytes=0-9,100000-100099,-5"}),
    Case("one unsatisfiable among two", {"Range": f"bytes=0-9,{SIZE + 10}-"}),
    Case("adjacent ranges", {"Range": "bytes=0-0,1-1"}),
    Case("overlapping ranges", {"Range": "bytes=0-10,5-20"}),
    Case("unsatisfiable start", {"Range": f"bytes={SIZE}-"}),
    Case("unsatisfiable far", {"Range": f"bytes={SIZE + 10}-{SIZE + 20}"}),
    Case("malformed letters", {"Range": "bytes=abc"}),
    Case("malformed reversed", {"Range": "bytes=5-1"}),
    Case("zero suffix", {"Range": "bytes=-0"}),
    Case("unknown unit", {"Range": "items=0-1"}),
    Case("if-range strong etag", {"Range": "bytes=0-9", "If-Range": "{etag}"}),
    Case("if-range weak etag", {"Range": "bytes=0-9", "If-Range": "W/{etag}"}),
    Case("if-range other etag", {"Range": "bytes=0-9", "If-Range": '"other"'}),
    Case("if-range date", {"Range": "bytes=0-9", "If-Range": "{last}"}),
    Case("if-range older date", {"Range": "bytes=0-9", "If-Range": "{older}"}),
    Case("if-none-match hit", {"If-None-Match": "{etag}"}),
    Case("if-none-match miss", {"If-None-Match": '"other"'}),
    Case("if-none-match star", {"If-None-Match": "*"}),
    Case("if-none-match in a list", {"If-None-Match": '"a", {etag}'}),
    Case("if-modified-since equal", {"If-Modified-Since": "{last}"}),
    Case("if-modified-since older", {"If-Modified-Since": "{older}"}),
    Case("if-modified-since newer", {"If-Modified-Since": "{newer}"}),
    Case(
        "if-none-match wins over a hit date",
        {"If-None-Match": '"x"', "If-Modified-Since": "{last}"},
    ),
    Case(
        "if-none-match hit with an old date",
        {"If-None-Match": "{etag}", "If-Modified-Since": "{older}"},
    ),
    Case("range under if-none-match hit", {"If-None-Match": "{etag}", "Range": "bytes=0-9"}),
    Case("head", method="HEAD"),
    Case("head with range", {"Range": "bytes=0-9"}, method="HEAD"),
    Case("head with suffix range", {"Range": "bytes=-5"}, method="HEAD"),
    Case("head unsatisfiable", {"Range": f"bytes={SIZE}-"}, method="HEAD"),
    Case("head if-none-match", {"If-None-Match": "{etag}"}, method="HEAD"),
    Case("tiny whole range", {"Range": "bytes=0-96"}, path="/tiny.txt"),
    Case("tiny plain", path="/tiny.txt"),
]

#: Deliberate differences: case name -> (nginx's status, Static's status).
#: docs/static.md ("Differences from nginx") gives the reasons.
DIFFERENCES = {
    # RFC 9110 §14.2 lets a server ignore a Range it cannot use: Static sends
    # the whole representation (200) for a malformed header; nginx says 416.
    "malformed letters": (416, 200),
    "malformed reversed": (416, 200),
    "zero suffix": (416, 200),
    # §14.3: ranges that nearly touch are coalesced into one; nginx sends one
    # part for each. Overlapping ranges are refused by werkzeug's parser, so
    # Static sends the whole file (nginx repeats the overlap in two parts).
    "adjacent ranges": (206, 206),
    "overlapping ranges": (206, 200),
    # §13.2.2: when If-None-Match is present, If-Modified-Since is not
    # evaluated; nginx sends 200 because the date alone says "modified".
    "if-none-match hit with an old date": (200, 304),
    # §13.1.3: "not modified since" a later date is a 304 (nginx's default
    # "if_modified_since exact" wants the very same date).
    "if-modified-since newer": (200, 304),
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def ask(port: int, case: Case, values: dict[str, str]) -> Answer:
    lines = [f"{case.method} {case.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v.format(**values)}" for k, v in case.headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in fields:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def validators(port: int, path: str) -> dict[str, str]:
    answer = ask(port, Case("validators", method="HEAD", path=path), {})
    last = answer.header("Last-Modified") or ""
    stamp = parse_date(last)
    assert stamp is not None, answer.headers
    return {
        "etag": answer.header("ETag") or "",
        "last": last,
        "older": http_date(stamp.timestamp() - 3600),
        "newer": http_date(stamp.timestamp() + 3600),
    }


def parts(answer: Answer) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part of a multipart/byteranges body."""
    boundary = re.search(r"boundary=(\S+)", answer.header("Content-Type") or "")
    assert boundary is not None, answer.headers
    found = []
    for chunk in answer.body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        content_range = re.search(rb"Content-Range: (.+)", head, re.IGNORECASE)
        assert content_range is not None, head
        found.append((content_range.group(1).strip().decode(), data[:-2]))  # CRLF before "--"
    return found


def comparable(answer: Answer, method: str) -> tuple[object, ...]:
    """What must agree: status, and for content the length, range and bytes."""
    if answer.status in (304, 416):
        # No content to compare (416 bodies are each server's own error page);
        # the header sets are compared by test_304_and_416_header_sets.
        return (answer.status, answer.header("Content-Range"))
    if (answer.header("Content-Type") or "").startswith("multipart/byteranges"):
        # Boundaries differ (and so the length): compare the parts.
        return (answer.status, "multipart", parts(answer) if method == "GET" else None)
    return (
        answer.status,
        answer.header("Content-Length"),
        answer.header("Content-Range"),
        answer.body,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conformance")
    (path / "medium.bin").write_bytes(MEDIUM)
    (path / "tiny.txt").write_bytes(TINY)
    (path / "small.html").write_bytes(SMALL)
    path.chmod(0o755)
    for child in path.iterdir():
        child.chmod(0o644)
    (path / "app.py").write_text(APP)
    return path


@pytest.fixture(scope="module")
def servers(root: Path) -> Iterator[tuple[int, int]]:
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    static = GunicornServer(
        "app:app", cwd=root, env={"CONFORMANCE_ROOT": str(root), "PYTHONPATH": path}
    )
    with Nginx(root) as nginx, static:
        yield nginx.port, static.port


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 37
    assert set(DIFFERENCES) <= {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_static_answers_like_nginx(servers: tuple[int, int], case: Case) -> None:
    nginx_port, static_port = servers
    nginx = ask(nginx_port, case, validators(nginx_port, case.path))
    static = ask(static_port, case, validators(static_port, case.path))
    if case.name in DIFFERENCES:
        assert (nginx.status, static.status) == DIFFERENCES[case.name]
        if static.status == 200:
            assert static.body == MEDIUM  # ignoring the Range means the whole file
        if case.name == "adjacent ranges":
            assert static.header("Content-Range") == f"bytes 0-1/{SIZE}"
            assert static.body == MEDIUM[:2]
        return
    assert comparable(static, case.method) == comparable(nginx, case.method)
    if case.method == "HEAD":
        assert static.body == b"" and nginx.body == b""


def test_304_and_416_header_sets(servers: tuple[int, int]) -> None:
    for port in servers:
        values = validators(port, "/medium.bin")
        not_modified = ask(port, Case("304", {"If-None-Match": "{etag}"}), values)
        assert not_modified.status == 304 and not_modified.body == b""
        # RFC 9110 §15.4.5: the validators a 200 would carry.
        assert not_modified.header("ETag") == values["etag"]
        assert not_modified.header("Last-Modified") == values["last"]
        unsatisfiable = ask(port, Case("416", {"Range": f"bytes={SIZE}-"}), values)
        assert unsatisfiable.status == 416
        assert unsatisfiable.header("Content-Range") == f"bytes */{SIZE}"  # §15.5.17


REDBOT = shutil.which("redbot", path=str(Path(sys.executable).parent))

#: Notes REDbot gives nginx as well, for the same reason: a 97-byte range of a
#: 10-byte file is all of it, and both answer 206 (so must every Safari-safe
#: server: old Safari needs a 206 for "bytes=0-", werkzeug#1704).
SHARED_WITH_NGINX = {"/tiny.txt": {"RANGE_CL_FULL"}}


def redbot_problems(url: str) -> set[str]:
    """The ids of REDbot's BAD and WARN notes for ``url`` (its HAR output)."""
    out = subprocess.run(
        [str(REDBOT), "-o", "har", url], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    notes = [n for e in json.loads(out)["log"]["entries"] for n in e["_red_messages"]]
    assert notes, out[:2000]  # REDbot really checked something
    return {f"{n['note_id']}" for n in notes if n["level"] in ("BAD", "WARN")}


@pytest.mark.skipif(REDBOT is None, reason="redbot is not installed (pip install redbot)")
@pytest.mark.parametrize("path", ["/small.html", "/medium.bin", "/tiny.txt"])
def test_redbot_finds_nothing_bad(servers: tuple[int, int], path: str) -> None:
    nginx_port, static_port = servers
    allowed = SHARED_WITH_NGINX.get(path, set())
    assert redbot_problems(f"http://127.0.0.1:{static_port}{path}") - allowed == set()
    if allowed:
        assert allowed <= redbot_problems(f"http://127.0.0.1:{nginx_port}{path}")
