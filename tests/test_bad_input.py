"""Bad input against Static: traversal, range abuse, malformed headers, fuzzing.

The tree every test serves::

    base/secret.txt            just outside the root: must never be served
    base/public2/secret.txt    a sibling whose name starts like the root's
    base/public/               the root: index.html, data.bin, sub/a.txt,
                               link-secret -> ../secret.txt, link-base -> ..

The traversal corpus (``tests/attack_paths.txt``) goes raw over a socket to
real servers, so that no client library normalizes it on the way. The rest
runs in-process through WebTest's lint, plus hypothesis over paths, ranges
and conditional headers. After every response no descriptor under ``base``
may be open (``/proc``), and nothing may ever answer 500.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webtest import TestApp, TestRequest, TestResponse

from wsgipipe import ClientGone, FileErrors, Static, TransferLog, file_response
from wsgipipe.testing import GunicornServer, open_files, raw_request, wait_until
from wsgipipe.testing._matrix import MatrixServer
from wsgipipe.testing._process import ServerProcess

TESTS = Path(__file__).parent
SECRETS = (b"TOP-SECRET-OUTSIDE-ROOT", b"TOP-SECRET-SIBLING", b"root:x:0:0")
DATA = bytes(range(256)) * 40  # 10240 bytes, every offset recognisable
SIZE = len(DATA)
INDEX = b"<!doctype html><title>index</title>\n"
ATTACKS = [
    line.rstrip("\n")
    for line in (TESTS / "attack_paths.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


@dataclass
class Tree:
    base: Path
    root: Path


def _build(base: Path) -> Tree:
    root = base / "public"
    (root / "sub").mkdir(parents=True)
    (base / "public2").mkdir()
    (base / "secret.txt").write_bytes(SECRETS[0])
    (base / "public2" / "secret.txt").write_bytes(SECRETS[1])
    (root / "index.html").write_bytes(INDEX)
    (root / "data.bin").write_bytes(DATA)
    (root / "sub" / "a.txt").write_bytes(b"a\n")
    os.symlink("../secret.txt", root / "link-secret")
    os.symlink("..", root / "link-base")
    for path in (base, root, root / "sub", base / "public2"):
        path.chmod(0o755)
    return Tree(base, root)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return _build(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture(scope="module")
def app(tree: Tree) -> TestApp:
    return TestApp(Static(tree.root), lint=True)


def _no_secret(body: bytes) -> bool:
    return not any(secret in body for secret in SECRETS)


def _request(app: TestApp, path_info: str, **headers: str) -> TestResponse:
    """GET with PATH_INFO exactly as a server hands it over (latin-1 text)."""
    request = TestRequest.blank("/", headers=headers)
    request.environ["PATH_INFO"] = path_info
    response: TestResponse = app.do_request(request, status="*", expect_errors=True)
    return response


def _clean(tree: Tree) -> bool:
    return not open_files("self", tree.base)


# -- the traversal corpus, raw over a socket ---------------------------------


def test_the_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 40
    assert len(set(ATTACKS)) == len(ATTACKS)


def _start(server: str, root: Path) -> ServerProcess:
    env = {"WSGIPIPE_TEST_ROOT": str(root)}
    if server == "gunicorn":
        return GunicornServer("lifecycle_app:static", cwd=TESTS / "apps", env=env)
    return MatrixServer(server, "lifecycle_app:static", cwd=TESTS / "apps", env=env)


def _raw_get(port: int, target: str) -> tuple[int, bytes]:
    with raw_request(port, target, headers={"Connection": "close"}, timeout=5) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    # uWSGI echoes part of a malformed request line before its status line.
    status = re.search(rb"HTTP/1\.[01] (\d{3})", head)
    assert status is not None, head
    return int(status.group(1)), body


SERVERS = ["gunicorn", "waitress", "werkzeug", "wsgiref", "uwsgi"]


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, tree: Tree) -> Iterator[ServerProcess]:
    if request.param == "uwsgi" and not shutil.which("uwsgi", path=Path(sys.executable).parent):
        pytest.skip("uwsgi is not installed (pip install uwsgi)")
    with _start(request.param, tree.root) as server:
        yield server


@pytest.mark.server
def test_traversal_corpus_never_reaches_outside_the_root(served: ServerProcess, tree: Tree) -> None:
    answers: dict[str, tuple[int, bytes]] = {}
    for target in ATTACKS:
        answers[target] = _raw_get(served.port, target)
    leaks = [target for target, (_, body) in answers.items() if not _no_secret(body)]
    assert leaks == []
    # Every request that reaches the app gets the same 404, so nothing can be
    # learnt from the answer; the only other answer is the server's own 400
    # for a request line it cannot parse ("/.. /secret.txt" has a space).
    # uWSGI alone reads that line as a request for "/.." and, after its own
    # normalization, serves the index inside the root: still no secret.
    odd = {target: answer for target, answer in answers.items() if answer[0] != 404}
    if isinstance(served, MatrixServer) and served.server == "uwsgi":
        assert odd == {"/.. /secret.txt": (200, INDEX)}
    else:
        assert {target: status for target, (status, _) in odd.items()} == {"/.. /secret.txt": 400}
    bodies = {body for status, body in answers.values() if status == 404}
    assert bodies == {b"404 Not Found\n"}
    assert wait_until(lambda: not served.open_files(tree.base))
    assert _raw_get(served.port, "/data.bin") == (200, DATA)  # still serving


@pytest.mark.parametrize("target", ATTACKS)
def test_traversal_corpus_in_process(app: TestApp, tree: Tree, target: str) -> None:
    # The same strings decoded the way gunicorn builds PATH_INFO (one
    # percent-decoding, latin-1 text), for a precise failure per string.
    from urllib.parse import unquote_to_bytes, urlsplit

    path = urlsplit(target).path if target.startswith("http") else target.split("?")[0]
    response = _request(app, unquote_to_bytes(path).decode("latin-1"))
    assert response.status_int == 404
    assert response.body == b"404 Not Found\n"
    assert _clean(tree)


# -- range abuse ---------------------------------------------------------------

RANGE_ABUSE = [
    "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)),
    "bytes=" + ",".join("0-" for _ in range(1000)),
    "bytes=" + ",".join(f"{i}-{i + 5000}" for i in range(0, 5000, 5)),
    "bytes=0-100,50-150,0-",
    "bytes=0-0,-1",
    "bytes=0-0,0-0,0-0,0-0",
    "bytes=-1,-1,-1,-1,-1,-1,-1,-1",
    "bytes=0-99999999999999999999999999",
    "bytes=99999999999999999999-",
    "bytes=-99999999999999999999",
    "bytes=-0",
    "bytes=--1",
    "bytes=-1-2",
    "bytes=5-1",
    "bytes=0--1",
    "bytes=a-b",
    "bytes=0x10-0x20",
    "bytes=1e3-2e3",
    "bytes=\u0663-\u0664",  # Arabic-Indic digits: int() would take them
    "bytes=",
    "bytes=,",
    "bytes=0-1,",
    "bytes",
    "=0-1",
    "items=0-1",
    "BYTES=0-1",
    "bytes=0-1" * 1000,
    f"bytes={SIZE}-",
    f"bytes={SIZE - 1}-{SIZE * 2}",
]


@pytest.mark.parametrize("value", RANGE_ABUSE, ids=range(len(RANGE_ABUSE)))
def test_range_abuse_is_bounded_and_never_500(app: TestApp, tree: Tree, value: str) -> None:
    response = _request(app, "/data.bin", Range=value)
    assert response.status_int in (200, 206, 416)
    # A flood of tiny ranges must not multiply the response (amplification).
    assert len(response.body) <= SIZE + 1024
    if response.status_int == 200:
        assert response.body == DATA
    if response.status_int == 416:
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert _clean(tree)


# -- malformed conditional headers, long and broken input ----------------------

CONDITIONAL_ABUSE = [
    ("If-Modified-Since", "garbage"),
    ("If-Modified-Since", "Mon, 99 Foo 2020 99:99:99 GMT"),
    ("If-Modified-Since", "Sat, 01 Jan 10000 00:00:00 GMT"),
    ("If-Modified-Since", "-1"),
    ("If-Modified-Since", "9" * 500),
    ("If-Unmodified-Since", "not a date"),
    ("If-None-Match", '"unterminated'),
    ("If-None-Match", "W/"),
    ("If-None-Match", ",,,,"),
    ("If-None-Match", '"a", W/"b", *, garbage'),
    ("If-None-Match", '"x"' * 5000),
    ("If-Match", "garbage"),
    ("If-Match", ""),
    ("If-Range", 'W/"weak"'),
    ("If-Range", "garbage"),
    ("If-Range", "Mon, 99 Foo 2020 99:99:99 GMT"),
    # Two headers, joined by the server; a year 0000 that must not become 2000
    ("If-Modified-Since", "Sun, 06 Nov 2101 08:49:37 GMT, Sun, 06 Nov 2101 08:49:37 GMT"),
    ("If-Modified-Since", "Sat, 01 Jan 0000 00:00:00 GMT"),
    ("If-Unmodified-Since", "Sat, 01 Jan 0000 00:00:00 GMT"),
    ("If-Range", "Sat, 01 Jan 0000 00:00:00 GMT"),
]

#: Conditional values that are no valid HTTP-date: ignored (RFC 9110 §13.1.3),
#: so the Range is honoured and the answer is the 206 a plain request gets.
INVALID_DATES = [
    "{last}, {last}",
    "{last}, Thu, 01 Jan 1970 00:00:00 GMT",
    "Sun, 06 Nov 2101 08:49:37 GMT, x",
    "Sat, 01 Jan 0000 00:00:00 GMT",
    "06 Nov 2101 08:49:37 GMT",
]


@pytest.mark.parametrize("value", INVALID_DATES)
def test_invalid_if_modified_since_is_ignored(app: TestApp, tree: Tree, value: str) -> None:
    last = _request(app, "/data.bin").headers["Last-Modified"]
    response = _request(
        app, "/data.bin", **{"If-Modified-Since": value.format(last=last), "Range": "bytes=0-9"}
    )
    assert (response.status_int, response.body) == (206, DATA[:10])
    assert _clean(tree)


@pytest.mark.parametrize(("header", "value"), CONDITIONAL_ABUSE)
def test_malformed_conditional_headers_get_a_clear_answer(
    app: TestApp, tree: Tree, header: str, value: str
) -> None:
    response = _request(app, "/data.bin", **{header: value, "Range": "bytes=0-9"})
    assert response.status_int in (200, 206, 304, 412)
    if response.status_int == 206:
        assert response.body == DATA[:10]
    if response.status_int == 200:
        assert response.body == DATA
    assert _clean(tree)


BROKEN_PATHS = [
    "/" + "a" * 100_000,
    "/" + "a/" * 5000 + "data.bin",
    "/data.bin\x00",
    "/\x00",
    "/sub/a.txt\x00.html",
    "/\xff\xfe",  # "%ff%fe": not UTF-8
    "/\xc3",  # a truncated UTF-8 sequence
    "/\xed\xa0\x80",  # an encoded surrogate
    "/%zz",  # what a server leaves of an invalid escape
    "/%",
    "/data.bin%",
    "/\r\nSet-Cookie: x=1",
    "/\u2028",
]


@pytest.mark.parametrize("path_info", BROKEN_PATHS, ids=range(len(BROKEN_PATHS)))
def test_broken_paths_are_404(app: TestApp, tree: Tree, path_info: str) -> None:
    response = _request(app, path_info)
    assert response.status_int == 404
    assert response.body == b"404 Not Found\n"
    assert _clean(tree)


@pytest.mark.parametrize(
    "accept", ["," * 10000, "gzip;q=0.5, " * 1000, "br, gzip, " + "x-" * 100_000]
)
def test_very_long_header_values_do_not_matter(app: TestApp, tree: Tree, accept: str) -> None:
    response = _request(app, "/data.bin", **{"X-Long": "x" * 1_000_000, "Accept-Encoding": accept})
    assert (response.status_int, response.body) == (200, DATA)
    assert "Content-Encoding" not in response.headers
    assert _clean(tree)


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # webtest's lint on BREW
@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW", "get"]
)
def test_other_methods_get_405_with_allow(app: TestApp, tree: Tree, method: str) -> None:
    response = app.request("/data.bin", method=method, status="*", expect_errors=True)
    assert response.status_int == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.body == b"405 Method Not Allowed\n"
    assert _clean(tree)


@pytest.mark.server
def test_raw_broken_requests_to_gunicorn(tree: Tree) -> None:
    # What a real server makes of bytes no client library would send.
    with _start("gunicorn", tree.root) as server:
        for target in ["/data.bin%00", "/%ff%fe", "/%zz", "/%", "/" + "a" * 3000]:
            status, body = _raw_get(server.port, target)
            assert status in (400, 404), target
            assert _no_secret(body)
        assert _raw_get(server.port, "/" + "a" * 10000)[0] in (400, 414)  # line too long
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /data.bin\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert _raw_get(server.port, "/data.bin") == (200, DATA)
        assert wait_until(lambda: not server.open_files(tree.base))
        assert "Traceback" not in server.log


# -- log forging -------------------------------------------------------------------

#: PATH_INFO as a server hands it over (percent-decoded): each tries to start a
#: line of its own in the log, or to drive the terminal of whoever reads it.
LOG_INJECTION = [
    "/nope\n2026-11-30 18:10:00,000 [1234] wsgipipe GET /admin/secret.zip 200 finished",
    "/nope\r\n2026-11-30 18:10:00,000 wsgipipe GET /x 200 finished",
    "/nope\x1b[2J\x1b[31mred\x1b[0m",
    "/nope\r\nSet-Cookie: forged=1",
    "/nope\x85next-line\x0bvt\x0cff\x7fdel",
    "/nope\xe2\x80\xa8forged",  # U+2028 in UTF-8, as latin-1 text
]


@pytest.mark.parametrize("path_info", LOG_INJECTION, ids=range(len(LOG_INJECTION)))
def test_client_input_never_forges_a_log_line(
    tree: Tree, path_info: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The documented pattern: file_response for a client-chosen name under FileErrors.
    def download(environ: dict[str, object], start_response: object) -> object:
        name = str(environ["PATH_INFO"]).lstrip("/")
        return file_response(environ, tree.root / name)(environ, start_response)  # type: ignore[arg-type]

    app = TestApp(TransferLog(FileErrors(download)), lint=True)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="wsgipipe"):
        response = _request(app, path_info)
    assert response.status_int == 404
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines  # FileErrors' 404 and TransferLog's transfer line
    for line in lines:
        assert line.isprintable() and line.isascii(), repr(line)
        fields = line.split(" error=")[0]  # an error message keeps its spaces
        assert "wsgipipe GET /admin" not in fields and " 200 finished" not in fields
    escaped = lines[1].split(" ")[1]  # TransferLog: "GET <path> 404 ..."
    assert escaped.startswith("/nope%") and f"GET {escaped}:" in lines[0]  # the same way


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_bytes(SECRETS[0])
    (tmp_path / "cfg.txt").symlink_to(tmp_path / ".git" / "config")
    return tmp_path


def test_followed_symlink_to_a_hidden_file_is_404(linked: Path) -> None:
    response = _request(TestApp(Static(linked, follow_symlinks=True), lint=True), "/cfg.txt")
    assert (response.status_int, response.body) == (404, b"404 Not Found\n")


# -- the example app's demo routes --------------------------------------------------

#: Query strings that once meant a 500 or a thread held for hours.
DEMO_ABUSE = [
    ("/limit/data.bin", "rate=" + "9" * 310),  # float("9" * 310) is inf: OverflowError
    ("/limit/data.bin", "rate=1e400"),
    ("/limit/data.bin", "rate=inf"),
    ("/limit/data.bin", "rate=nan"),
    ("/slow/data.bin", "delay=" + "9" * 310),
    ("/slow/data.bin", "delay=inf"),
    ("/slow/data.bin", "delay=nan"),
    ("/slow/data.bin", "delay=-1"),
]


@pytest.fixture(scope="module")
def experiments(tree: Tree) -> TestApp:
    from examples.app import Experiments

    return TestApp(Experiments(tree.root, time_limit=0.3), lint=True)


@pytest.mark.parametrize(("path", "query"), DEMO_ABUSE)
def test_demo_route_abuse_is_a_400(experiments: TestApp, path: str, query: str) -> None:
    response = experiments.get(f"{path}?{query}", status="*", expect_errors=True)
    assert response.status_int == 400
    assert response.body.startswith(b"400 Bad Request: ")


@pytest.mark.parametrize("query", ["/slow/five.bin?delay=0.2", "/limit/five.bin?rate=256k"])
def test_demo_routes_stop_at_their_time_limit(tmp_path: Path, query: str) -> None:
    # delay=60 on a 64 MiB file was 17 hours; every demo response now ends
    # by the limit, aborted with its reason (never a short body that looks whole).
    from examples.app import Experiments

    five = os.urandom(5 * 64 * 1024)  # five chunks: 1 s at either pace
    (tmp_path / "five.bin").write_bytes(five)
    path, _, qs = query.partition("?")
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": qs, "SCRIPT_NAME": ""}
    body = Experiments(tmp_path, time_limit=0.3)(env, lambda status, headers, exc_info=None: None)
    got = b""
    with pytest.raises(ClientGone):
        for chunk in body:
            got += chunk
    body.close()  # type: ignore[attr-defined]
    assert 0 < len(got) < len(five) and five.startswith(got)
    assert body.outcome == "aborted"  # type: ignore[attr-defined]
    assert body.reason == "demo time limit 0.3s"  # type: ignore[attr-defined]
    assert open_files("self", tmp_path) == []


DEMO_APP = """
import os
from pathlib import Path
from examples.app import Experiments
from wsgipipe import TransferLog, log_to_stderr
log_to_stderr()
app = TransferLog(Experiments(Path(os.environ["DEMO_ROOT"]), time_limit=1.0))
"""


@pytest.mark.server
def test_demo_time_limit_cuts_the_connection_under_gunicorn(tmp_path: Path) -> None:
    # ClientGone from the body: gunicorn closes the connection quietly (no
    # traceback), the client sees fewer bytes than Content-Length, the line says why.
    (tmp_path / "five.bin").write_bytes(os.urandom(5 * 64 * 1024))
    (tmp_path / "demo_app.py").write_text(DEMO_APP)
    path = os.pathsep.join([str(tmp_path), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    env = {"DEMO_ROOT": str(tmp_path), "PYTHONPATH": path}
    with GunicornServer("demo_app:app", cwd=tmp_path, env=env) as server:
        with raw_request(server, "/slow/five.bin?delay=0.4", timeout=10) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 327680" in head
        assert 0 < len(body) < 5 * 64 * 1024
        assert server.wait_for_log(r"GET /slow/five.bin 200 aborted .*demo time limit 1s")
        assert wait_until(lambda: not server.open_files(tmp_path))
        assert "Traceback" not in server.log


# -- property tests --------------------------------------------------------------

SEGMENTS = st.sampled_from(
    ["..", ".", "", "sub", "a.txt", "data.bin", "index.html", "public2", "secret.txt",
     "link-secret", "link-base", "%2e%2e", "..\\", "c:", "\x00", "NUL", ".hidden", "é"]
)  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=6).map(lambda segs: "/" + "/".join(segs)),
    st.text(max_size=40).map(lambda text: "/" + text),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _as_path_info(path: str) -> str:
    return path.encode("utf-8", "surrogatepass").decode("latin-1")


@FUZZ
@given(path=PATHS)
def test_property_no_path_escapes_or_fails(app: TestApp, tree: Tree, path: str) -> None:
    response = _request(app, _as_path_info(path))
    assert response.status_int in (200, 301, 404)
    assert _no_secret(response.body)
    if response.status_int == 200:
        served = tree.root.joinpath(*[s for s in path.split("/") if s] or ["index.html"])
        assert served.resolve().is_relative_to(tree.root)
        assert response.body == served.read_bytes()
    assert _clean(tree)


@FUZZ
@given(start=st.integers(-5, SIZE + 5), end=st.integers(-5, SIZE + 5))
def test_property_valid_ranges_are_the_file_slice(
    app: TestApp, tree: Tree, start: int, end: int
) -> None:
    response = _request(app, "/data.bin", Range=f"bytes={start}-{end}")
    if 0 <= start <= end and start < SIZE:
        assert response.status_int == 206
        assert response.body == DATA[start : end + 1]
        last = min(end, SIZE - 1)
        assert response.headers["Content-Range"] == f"bytes {start}-{last}/{SIZE}"
    elif start >= SIZE and start <= end:
        assert response.status_int == 416
    else:
        assert (response.status_int, response.body) == (200, DATA)
    assert _clean(tree)


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)


@FUZZ
@given(
    range_=HEADER_TEXT,
    conditional=st.sampled_from(
        ["If-None-Match", "If-Modified-Since", "If-Range", "If-Match", "If-Unmodified-Since"]
    ),
    value=HEADER_TEXT,
)
def test_property_any_headers_never_fail(
    app: TestApp, tree: Tree, range_: str, conditional: str, value: str
) -> None:
    response = _request(app, "/data.bin", Range=range_, **{conditional: value})
    assert response.status_int in (200, 206, 304, 412, 416)
    assert len(response.body) <= SIZE + 1024
    if response.status_int == 200:
        assert response.body == DATA
    assert _clean(tree)
