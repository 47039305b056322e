"""Static and file_response in-process: HTTP semantics, path safety, zero-copy hand-off."""

from __future__ import annotations

import gzip
import io
import os
import re
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.util import FileWrapper

import pytest
from webtest import TestApp
from werkzeug.http import http_date, parse_date

from wsgipipe import (
    ConfigurationError,
    FileChanged,
    FileErrors,
    FileStream,
    Static,
    TransferLog,
    file_response,
)
from wsgipipe.testing import open_files

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DATA = bytes(range(256)) * 400  # 102400 bytes: more than one 64 KiB chunk
TEXT = "héllo wörld\n".encode() * 10
CSS = b"body { color: red; }\n" * 50


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "sub" / "deeper").mkdir(parents=True)
    (base / "empty-dir").mkdir()
    (base / "data.bin").write_bytes(DATA)
    (base / "hello.txt").write_bytes(TEXT)
    (base / "index.html").write_bytes(b"<h1>home</h1>")
    (base / "sub" / "index.html").write_bytes(b"<h1>sub</h1>")
    (base / "sub" / "page.html").write_bytes(b"<p>page</p>")
    (base / ".secret").write_bytes(b"hidden")
    (base / "app.3f9a1c2e.js").write_bytes(b"console.log(1)")
    (base / "empty.txt").write_bytes(b"")
    (base / "style.css").write_bytes(CSS)
    (base / "style.css.gz").write_bytes(gzip.compress(CSS))
    (base / "style.css.br").write_bytes(b"BR" + CSS[:40])  # any bytes: served as-is
    (tmp_path / "outside.txt").write_bytes(b"outside the root")
    (tmp_path / "root_sibling").mkdir()
    (tmp_path / "root_sibling" / "x").write_bytes(b"sibling")
    return base


@pytest.fixture
def client(root: Path) -> TestApp:
    return TestApp(Static(root), lint=True)


def call(app: WSGIApplication, path: str, **environ: Any) -> tuple[str, dict[str, str], bytes]:
    """Call the app with PATH_INFO exactly as given (no client normalization)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        **environ,
    }
    seen: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen[:] = [status, dict(headers)]
        return lambda data: None

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen[0], seen[1], body


def leaked(root: Path) -> list[str]:
    return open_files("self", root)


class TestFullResponses:
    def test_get_headers(self, client: TestApp, root: Path) -> None:
        res = client.get("/hello.txt")
        assert res.status_int == 200
        assert res.body == TEXT
        assert res.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert res.headers["Content-Length"] == str(len(TEXT))
        assert res.headers["Accept-Ranges"] == "bytes"
        st = os.stat(root / "hello.txt")
        assert parse_date(res.headers["Last-Modified"]).timestamp() == int(st.st_mtime)  # type: ignore[union-attr]
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', res.headers["ETag"])
        assert "Date" not in res.headers  # the server's job
        assert leaked(root) == []

    def test_large_file_streams_whole(self, client: TestApp, root: Path) -> None:
        res = client.get("/data.bin")
        assert res.body == DATA
        assert res.headers["Content-Type"] == "application/octet-stream"
        assert leaked(root) == []

    def test_empty_file(self, client: TestApp) -> None:
        res = client.get("/empty.txt", headers={"Range": "bytes=0-"})
        assert res.status_int == 200
        assert res.body == b""
        assert res.headers["Content-Length"] == "0"

    def test_head_sends_headers_and_never_reads(
        self, client: TestApp, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        get = client.get("/data.bin")

        def no_read(*args: object) -> bytes:
            raise AssertionError("HEAD read the file")

        monkeypatch.setattr(os, "read", no_read)
        monkeypatch.setattr(os, "pread", no_read)
        res = client.head("/data.bin")
        assert res.status_int == 200
        assert res.body == b""
        for name in ("Content-Length", "ETag", "Last-Modified", "Content-Type"):
            assert res.headers[name] == get.headers[name]
        assert leaked(root) == []

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
    def test_other_methods_are_405_with_allow(self, client: TestApp, method: str) -> None:
        res = client.request("/hello.txt", method=method, status=405)
        assert res.headers["Allow"] == "GET, HEAD"

    def test_index_and_directory_redirect(self, client: TestApp) -> None:
        assert client.get("/").body == b"<h1>home</h1>"
        assert client.get("/sub/").body == b"<h1>sub</h1>"
        res = client.get("/sub", status=301)
        assert res.headers["Location"] == "sub/"  # relative: resolves to /sub/
        client.get("/empty-dir", status=404)
        client.get("/empty-dir/", status=404)
        client.get("/sub/deeper/", status=404)

    def test_no_index(self, root: Path) -> None:
        client = TestApp(Static(root, index=None), lint=True)
        client.get("/", status=404)
        client.get("/sub", status=404)

    def test_cache_control_policy(self, root: Path) -> None:
        client = TestApp(Static(root), lint=True)
        assert client.get("/hello.txt").headers["Cache-Control"] == "max-age=60"
        immutable = client.get("/app.3f9a1c2e.js").headers["Cache-Control"]
        assert immutable == "max-age=31536000, immutable"
        none = TestApp(Static(root, max_age=None, immutable=None), lint=True)
        assert "Cache-Control" not in none.get("/app.3f9a1c2e.js").headers

    def test_mimetype_overrides_and_extra_headers(self, root: Path) -> None:
        app = Static(
            root,
            mimetypes={".TXT": "text/x-custom"},
            headers=lambda name: [("X-Name", name)],
        )
        res = TestApp(app, lint=True).get("/sub/page.html")
        assert res.headers["X-Name"] == "sub/page.html"
        hello = TestApp(app, lint=True).get("/hello.txt")
        assert hello.headers["Content-Type"] == "text/x-custom; charset=utf-8"


class TestRanges:
    def test_open_ended_is_206(self, client: TestApp) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=0-"}, status=206)
        assert res.body == DATA
        assert res.headers["Content-Range"] == f"bytes 0-{len(DATA) - 1}/{len(DATA)}"

    def test_first_byte(self, client: TestApp) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=0-0"}, status=206)
        assert res.body == DATA[:1]
        assert res.headers["Content-Length"] == "1"

    def test_last_byte(self, client: TestApp) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=-1"}, status=206)
        assert res.body == DATA[-1:]
        assert res.headers["Content-Range"] == f"bytes {len(DATA) - 1}-{len(DATA) - 1}/{len(DATA)}"

    def test_middle_over_a_chunk(self, client: TestApp, root: Path) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=1000-90000"}, status=206)
        assert res.body == DATA[1000:90001]
        assert leaked(root) == []

    def test_unsatisfiable_is_416_and_keeps_headers(self, root: Path) -> None:
        app = Static(root, headers=lambda name: [("Access-Control-Allow-Origin", "*")])
        res = TestApp(app, lint=True).get(
            "/data.bin", headers={"Range": f"bytes={len(DATA)}-"}, status=416
        )
        assert res.headers["Content-Range"] == f"bytes */{len(DATA)}"
        for name in ("ETag", "Cache-Control", "Access-Control-Allow-Origin", "Vary"):
            assert name in res.headers
        assert leaked(root) == []

    @pytest.mark.parametrize("value", ["bytes=-", "bytes=abc", "lines=0-5", "bytes=9-3"])
    def test_malformed_is_ignored(self, client: TestApp, value: str) -> None:
        res = client.get("/hello.txt", headers={"Range": value}, status=200)
        assert res.body == TEXT

    @pytest.mark.parametrize("value", ["bytes=0-9", "bytes=-5", "bytes=0-9,1000-1099"])
    def test_head_with_range_answers_like_get(self, client: TestApp, value: str) -> None:
        # RFC 9110 §9.3.2: the same header fields as GET, so 206 and Content-Range.
        get = client.get("/data.bin", headers={"Range": value}, status=206)
        head = client.head("/data.bin", headers={"Range": value}, status=206)
        assert head.body == b""
        assert head.headers["Content-Length"] == get.headers["Content-Length"]
        assert head.headers.get("Content-Range") == get.headers.get("Content-Range")
        assert head.content_type == get.content_type

    def test_head_with_unsatisfiable_range_is_416(self, client: TestApp) -> None:
        res = client.head("/data.bin", headers={"Range": "bytes=999999-"}, status=416)
        assert res.headers["Content-Range"] == f"bytes */{len(DATA)}"

    def test_multipart_on_a_huge_sparse_file_plans_as_it_goes(self, tmp_path: Path) -> None:
        # bytes=0-0,200- on 100 GiB once planned 1.6 million reads up front
        # (+164 MiB, about a second before the first byte).
        with open(tmp_path / "huge.bin", "wb") as f:
            f.truncate(100 * 2**30)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/huge.bin", "HTTP_RANGE": "bytes=0-0,200-"}
        tracemalloc.start()
        try:
            body = Static(tmp_path)(env, lambda status, headers, exc_info=None: None)
            first = [next(iter(body)) for _ in range(4)]  # head, byte 0, head, first chunk
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            body.close()  # type: ignore[attr-defined]
        assert first[1] == b"\0" and first[2].endswith(b"\r\n\r\n")
        assert peak < 2 * 2**20, f"{peak} bytes allocated before the first chunks"
        assert leaked(tmp_path) == []

    def test_multipart_byteranges(self, client: TestApp, root: Path) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=0-9,1000-1099,-5"}, status=206)
        parts = parse_multipart(res.headers["Content-Type"], res.body)
        assert parts == [
            (f"bytes 0-9/{len(DATA)}", DATA[0:10]),
            (f"bytes 1000-1099/{len(DATA)}", DATA[1000:1100]),
            (f"bytes {len(DATA) - 5}-{len(DATA) - 1}/{len(DATA)}", DATA[-5:]),
        ]
        assert res.headers["Content-Length"] == str(len(res.body))
        assert leaked(root) == []

    def test_multipart_spanning_chunks(self, client: TestApp) -> None:
        res = client.get("/data.bin", headers={"Range": "bytes=0-70000,80000-"}, status=206)
        parts = parse_multipart(res.headers["Content-Type"], res.body)
        assert [body for _, body in parts] == [DATA[:70001], DATA[80000:]]

    def test_overlapping_ranges_never_exceed_the_file(self, client: TestApp) -> None:
        # werkzeug refuses out-of-order specs; a suffix range can still overlap.
        many = "bytes=0-50000,60000-70000,-100000"
        res = client.get("/data.bin", headers={"Range": many}, status=206)
        assert len(res.body) <= len(DATA)
        assert res.headers["Content-Range"] == f"bytes 0-{len(DATA) - 1}/{len(DATA)}"

    def test_excessive_ranges_get_the_whole_file(self, client: TestApp) -> None:
        specs = ",".join(f"{i * 100}-{i * 100}" for i in range(200))
        res = client.get("/data.bin", headers={"Range": f"bytes={specs}"}, status=200)
        assert res.body == DATA

    @pytest.mark.parametrize(
        ("if_range", "status"),
        [("etag", 206), ("weak", 200), ("other", 200), ("date", 206), ("older", 200)],
    )
    def test_if_range(self, client: TestApp, root: Path, if_range: str, status: int) -> None:
        etag = client.get("/hello.txt").headers["ETag"]
        mtime = int(os.stat(root / "hello.txt").st_mtime)
        value = {
            "etag": etag,
            "weak": "W/" + etag,
            "other": '"nope"',
            "date": http_date(mtime),
            "older": http_date(mtime - 60),
        }[if_range]
        res = client.get("/hello.txt", headers={"Range": "bytes=0-4", "If-Range": value})
        assert res.status_int == status
        assert res.body == (TEXT[:5] if status == 206 else TEXT)


class TestConditional:
    def test_if_none_match_304_keeps_headers(self, root: Path) -> None:
        cors = [("Access-Control-Allow-Origin", "https://a.example"), ("Expires", "0")]
        client = TestApp(Static(root, headers=lambda name: cors), lint=True)
        first = client.get("/hello.txt")
        res = client.get(
            "/hello.txt", headers={"If-None-Match": f'"x", {first.headers["ETag"]}'}, status=304
        )
        assert res.body == b""
        for name in ("ETag", "Cache-Control", "Vary", "Access-Control-Allow-Origin", "Expires"):
            assert res.headers[name] == first.headers[name]
        assert "Content-Length" not in res.headers
        assert leaked(root) == []

    def test_if_none_match_weak_and_star(self, client: TestApp) -> None:
        etag = client.get("/hello.txt").headers["ETag"]
        client.get("/hello.txt", headers={"If-None-Match": "W/" + etag}, status=304)
        client.get("/hello.txt", headers={"If-None-Match": "*"}, status=304)
        client.head("/hello.txt", headers={"If-None-Match": etag}, status=304)

    def test_if_modified_since(self, client: TestApp) -> None:
        last = client.get("/hello.txt").headers["Last-Modified"]
        client.get("/hello.txt", headers={"If-Modified-Since": last}, status=304)
        then = http_date(parse_date(last).timestamp() - 10)  # type: ignore[union-attr]
        client.get("/hello.txt", headers={"If-Modified-Since": then}, status=200)

    @pytest.mark.parametrize(
        "value",
        [
            "{last}, {last}",  # two headers, joined with ", " by gunicorn
            "{last}, Thu, 01 Jan 1970 00:00:00 GMT",
            "Sat, 01 Jan 0000 00:00:00 GMT",  # no year 0: not read as 2000
            "Fri, 01 Jan 2100 00:00:00 GMT garbage",
            "01 Jan 2100 00:00:00 GMT",  # not one of the three HTTP-date forms
        ],
    )
    def test_invalid_if_modified_since_is_ignored(self, client: TestApp, value: str) -> None:
        # RFC 9110 §13.1.3: a recipient must ignore an invalid date.
        last = client.get("/hello.txt").headers["Last-Modified"]
        headers = {"If-Modified-Since": value.format(last=last)}
        assert client.get("/hello.txt", headers=headers, status=200).body == TEXT

    def test_if_none_match_wins_over_if_modified_since(self, client: TestApp) -> None:
        # whitenoise#202: a rollback gives an older mtime but a different ETag.
        future = http_date(2_000_000_000)
        headers = {"If-None-Match": '"old-version"', "If-Modified-Since": future}
        assert client.get("/hello.txt", headers=headers, status=200).body == TEXT

    def test_if_match_and_if_unmodified_since_412(self, client: TestApp) -> None:
        etag = client.get("/hello.txt").headers["ETag"]
        client.get("/hello.txt", headers={"If-Match": '"other"'}, status=412)
        client.get("/hello.txt", headers={"If-Match": etag}, status=200)
        client.get("/hello.txt", headers={"If-Unmodified-Since": http_date(1)}, status=412)

    def test_changed_file_never_gets_stale_headers(self, client: TestApp, root: Path) -> None:
        path = root / "hello.txt"
        first = client.get("/hello.txt")
        st = os.stat(path)
        path.write_bytes(TEXT.upper())  # same size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        second = client.get("/hello.txt")
        assert second.body == TEXT.upper()
        assert second.headers["ETag"] != first.headers["ETag"]
        assert second.headers["Last-Modified"] != first.headers["Last-Modified"]
        client.get("/hello.txt", headers={"If-None-Match": first.headers["ETag"]}, status=200)
        path.write_bytes(b"short")
        third = client.get("/hello.txt")
        assert third.headers["Content-Length"] == "5"
        assert third.body == b"short"


class TestPrecompressed:
    """Called directly: WebTest would decode gzip bodies and drop Content-Encoding."""

    @staticmethod
    def get(app: Static, accept: str, **environ: Any) -> tuple[str, dict[str, str], bytes]:
        return call(app, "/style.css", HTTP_ACCEPT_ENCODING=accept, **environ)

    def test_gzip_sibling(self, root: Path) -> None:
        _, headers, body = self.get(Static(root), "gzip")
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"] == "text/css; charset=utf-8"
        assert headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(body) == CSS
        assert headers["Content-Length"] == str((root / "style.css.gz").stat().st_size)

    def test_brotli_preferred_then_q_values(self, root: Path) -> None:
        app = Static(root)
        assert self.get(app, "gzip, br")[1]["Content-Encoding"] == "br"
        assert self.get(app, "gzip;q=1, br;q=0.1")[1]["Content-Encoding"] == "gzip"
        _, headers, body = self.get(app, "br;q=0, gzip;q=0")
        assert "Content-Encoding" not in headers
        assert body == CSS
        assert headers["Vary"] == "Accept-Encoding"

    def test_each_encoding_has_its_own_etag(self, root: Path) -> None:
        app = Static(root)
        tags = {self.get(app, ae)[1]["ETag"] for ae in ("identity", "gzip", "br")}
        assert len(tags) == 3
        gz = self.get(app, "gzip")[1]["ETag"]
        assert self.get(app, "gzip", HTTP_IF_NONE_MATCH=gz)[0] == "304 Not Modified"
        assert self.get(app, "identity", HTTP_IF_NONE_MATCH=gz)[0] == "200 OK"

    def test_ranges_apply_to_encoded_bytes(self, root: Path) -> None:
        encoded = (root / "style.css.gz").read_bytes()
        status, headers, body = self.get(Static(root), "gzip", HTTP_RANGE="bytes=2-9")
        assert status == "206 Partial Content"
        assert body == encoded[2:10]
        assert headers["Content-Range"] == f"bytes 2-9/{len(encoded)}"

    def test_stale_sibling_is_skipped(self, root: Path) -> None:
        app = Static(root)
        st = os.stat(root / "style.css.gz")
        os.utime(root / "style.css.br", ns=(st.st_atime_ns, st.st_mtime_ns - 5_000_000_000))
        (root / "style.css").write_bytes(CSS)  # edited after compression
        os.utime(root / "style.css", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        _, headers, body = self.get(app, "br, gzip")
        assert "Content-Encoding" not in headers
        assert body == CSS

    def test_sibling_without_the_file_is_404(self, root: Path) -> None:
        (root / "style.css").unlink()
        assert self.get(Static(root), "gzip")[0] == "404 Not Found"

    def test_directory_is_never_the_file_behind_a_gz_sibling(self, root: Path) -> None:
        (root / "sub.gz").write_bytes(gzip.compress(b"not the directory"))
        (root / "empty-dir.gz").write_bytes(gzip.compress(b"not the directory"))
        app = Static(root)
        assert call(app, "/sub", HTTP_ACCEPT_ENCODING="gzip")[0] == "301 Moved Permanently"
        assert call(app, "/empty-dir", HTTP_ACCEPT_ENCODING="gzip")[0] == "404 Not Found"

    def test_huge_accept_encoding_is_ignored(self, root: Path, monkeypatch: Any) -> None:
        from wsgipipe import _http

        value = "x-unknown;q=0.1, " * 1000 + "gzip"
        _, headers, body = self.get(Static(root), value)
        assert "Content-Encoding" not in headers and body == CSS
        # A 404 never parses the header at all.
        parsed: list[str] = []
        real = _http.parse_accept_header
        monkeypatch.setattr(_http, "parse_accept_header", lambda v: parsed.append(v) or real(v))
        missing = call(Static(root), "/missing.css", HTTP_ACCEPT_ENCODING="gzip, br")
        assert missing[0] == "404 Not Found"
        assert parsed == []

    def test_off(self, root: Path) -> None:
        _, headers, _ = self.get(Static(root, precompressed=()), "gzip, br")
        assert "Content-Encoding" not in headers
        assert "Vary" not in headers


ATTACKS = [
    "/../etc/passwd",
    "/..%2f..%2fetc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/c:/windows/win.ini",
    "/c%3a%5cwindows%5cwin.ini",
    "/sub/NUL",
    "/sub/nul.txt",
    "/COM1",
    "/static/../root_sibling/x",
    "/../root_sibling/x",
    "/sub/../../outside.txt",
    "/hello.txt%00.png",
    "/hello.txt\x00",
    "/.secret",
    "/sub/./page.html",
    "//hello.txt",
    "/sub//page.html",
    "/hello.txt.",
    "/hello.txt ",
    "/sub\\page.html",
    "/link-etc/passwd",
    "/link-outside.txt",
    "/link-sibling/x",
    "/fifo",
    "/nope.txt",
    "/empty-dir",
    "/%ff%fe",
]


def raw(path: str) -> str:
    """PATH_INFO as gunicorn gives it: percent-decoded once, latin-1 text."""
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")


class TestPathSafety:
    @pytest.fixture
    def app(self, root: Path) -> Static:
        (root / "link-etc").symlink_to("/etc")
        (root / "link-outside.txt").symlink_to(root.parent / "outside.txt")
        (root / "link-sibling").symlink_to(root.parent / "root_sibling")
        os.mkfifo(root / "fifo")
        return Static(root)

    @pytest.mark.parametrize("path", ATTACKS)
    def test_every_refusal_is_the_same_404(self, app: Static, root: Path, path: str) -> None:
        expected = call(app, "/nope.txt")
        assert expected[0] == "404 Not Found"
        assert call(app, raw(path)) == expected
        assert call(app, path) == expected  # and if a server did not decode it
        assert leaked(root) == []

    def test_symlink_inside_the_root_is_fine(self, app: Static, root: Path) -> None:
        (root / "alias.txt").symlink_to(root / "hello.txt")
        assert call(app, "/alias.txt")[2] == TEXT

    def test_follow_symlinks_keeps_hidden_files_hidden(self, root: Path) -> None:
        (root / ".git").mkdir()
        (root / ".git" / "config").write_bytes(b"[remote] url = secret")
        (root.parent / ".env").write_bytes(b"TOKEN=secret")
        (root / "cfg.txt").symlink_to(root / ".git" / "config")
        (root / "env.txt").symlink_to(root.parent / ".env")
        (root / "fine.txt").symlink_to(root.parent / "outside.txt")
        for allow_hidden in (False, True):
            follow = Static(root, follow_symlinks=True, allow_hidden=allow_hidden)
            expected = "200 OK" if allow_hidden else "404 Not Found"
            assert call(follow, "/cfg.txt")[0] == expected
            assert call(follow, "/env.txt")[0] == expected
            assert call(follow, "/fine.txt")[2] == b"outside the root"
        assert leaked(root) == []

    def test_follow_symlinks(self, app: Static, root: Path) -> None:
        follow = Static(root, follow_symlinks=True)
        assert call(follow, "/link-outside.txt")[2] == b"outside the root"
        assert call(follow, "/link-sibling/x")[2] == b"sibling"
        assert call(follow, "/../outside.txt")[0] == "404 Not Found"

    def test_symlink_swapped_after_first_request(self, app: Static, root: Path) -> None:
        """A cached path must not keep serving once it leads outside the root."""
        (root / "swap.txt").write_bytes(b"inside")
        assert call(app, "/swap.txt")[2] == b"inside"
        (root / "swap.txt").unlink()
        (root / "swap.txt").symlink_to(root.parent / "outside.txt")
        assert call(app, "/swap.txt")[0] == "404 Not Found"

    def test_hidden_allowed_on_request(self, root: Path) -> None:
        assert call(Static(root, allow_hidden=True), "/.secret")[2] == b"hidden"

    def test_utf8_names(self, root: Path) -> None:
        (root / "naïve €.txt").write_bytes(b"unicode")
        assert call(Static(root), raw("/na%C3%AFve%20%E2%82%AC.txt"))[2] == b"unicode"

    def test_webtest_attack_strings(self, app: Static) -> None:
        client = TestApp(app, lint=True)
        for path in ATTACKS[:8]:
            client.get(path, status=404)


class TestMiddleware:
    @staticmethod
    def fallback(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"app"]

    def test_unknown_paths_and_other_methods_reach_the_app(self, root: Path) -> None:
        client = TestApp(Static(root, app=self.fallback), lint=True)
        assert client.get("/hello.txt").body == TEXT
        assert client.get("/nope").body == b"app"
        assert client.get("/../etc/passwd").body == b"app"
        assert client.post("/api").body == b"app"
        client.post("/hello.txt", status=405)


class TestConfiguration:
    def test_missing_root(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="not a directory"):
            Static(tmp_path / "missing")

    @pytest.mark.parametrize(
        "options",
        [
            {"offload": "nginx"},
            {"offload_prefix": "internal"},
            {"precompressed": ("zstd",)},
            {"index": "../index.html"},
            {"index": "sub/index.html"},
            {"mimetypes": {"md": "text/markdown"}},
        ],
    )
    def test_bad_options(self, root: Path, options: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError):
            Static(root, **options)


class TestOffload:
    def test_x_accel_redirect(self, root: Path) -> None:
        client = TestApp(Static(root, offload="x-accel-redirect"), lint=True)
        res = client.get("/sub/page.html")
        assert res.headers["X-Accel-Redirect"] == "/_wsgipipe_files/sub/page.html"
        assert res.headers["Content-Type"] == "text/html; charset=utf-8"
        assert res.body == b""
        client.get("/../etc/passwd", status=404)  # path safety still applies
        assert leaked(root) == []

    def test_x_sendfile(self, root: Path) -> None:
        res = TestApp(Static(root, offload="x-sendfile"), lint=True).get("/hello.txt")
        assert res.headers["X-Sendfile"] == str((root / "hello.txt").resolve())
        assert res.body == b""


class WrapperSpy(FileWrapper):
    """Stands for the server's wsgi.file_wrapper; records what it was given."""

    made: list[WrapperSpy] = []  # noqa: RUF012 - test bookkeeping

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        super().__init__(filelike, blksize)
        self.position = os.lseek(filelike.fileno(), 0, os.SEEK_CUR)
        WrapperSpy.made.append(self)


class TestZeroCopy:
    @pytest.mark.parametrize(
        ("headers", "position", "length"),
        [({}, 0, len(DATA)), ({"HTTP_RANGE": "bytes=500-"}, 500, len(DATA) - 500)],
    )
    def test_handed_to_file_wrapper_at_the_offset(
        self, root: Path, headers: dict[str, str], position: int, length: int
    ) -> None:
        WrapperSpy.made.clear()
        _, response_headers, body = call(
            Static(root), "/data.bin", **{"wsgi.file_wrapper": WrapperSpy}, **headers
        )
        assert len(WrapperSpy.made) == 1
        spy = WrapperSpy.made[0]
        assert isinstance(spy.filelike, FileStream)
        assert spy.position == position
        assert response_headers["Content-Length"] == str(length)
        assert body == DATA[position:]
        assert leaked(root) == []

    def test_small_files_are_read_at_once_and_released(self, root: Path) -> None:
        WrapperSpy.made.clear()
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello.txt", "wsgi.file_wrapper": WrapperSpy}
        body = Static(root)(env, lambda status, headers, exc_info=None: None)
        assert leaked(root) == []  # before the first byte is even asked for
        assert b"".join(body) == TEXT
        body.close()  # type: ignore[attr-defined]
        assert WrapperSpy.made == []

    def test_small_file_limit_zero_always_streams(self, root: Path) -> None:
        WrapperSpy.made.clear()
        _, _, body = call(
            Static(root, small_file=0), "/hello.txt", **{"wsgi.file_wrapper": WrapperSpy}
        )
        assert len(WrapperSpy.made) == 1
        assert body == TEXT

    def test_switch_off(self, root: Path) -> None:
        WrapperSpy.made.clear()
        _, _, body = call(
            Static(root, zero_copy=False), "/data.bin", **{"wsgi.file_wrapper": WrapperSpy}
        )
        assert WrapperSpy.made == []
        assert body == DATA

    def test_multipart_is_read_in_python(self, root: Path) -> None:
        WrapperSpy.made.clear()
        env = {"wsgi.file_wrapper": WrapperSpy, "HTTP_RANGE": "bytes=0-1,9000-9001"}
        assert call(Static(root), "/data.bin", **env)[0] == "206 Partial Content"
        assert WrapperSpy.made == []

    def test_transfer_log_sees_the_stream(self, root: Path) -> None:
        records: list[Any] = []
        app = TransferLog(Static(root), on_done=records.append)
        call(app, "/data.bin", HTTP_RANGE="bytes=10-")
        assert records[0].status == 206
        assert records[0].bytes_sent == len(DATA) - 10
        assert records[0].outcome == "finished"


class TestLifecycle:
    def test_closed_before_iteration_releases(self, root: Path) -> None:
        app = Static(root)
        for headers in ({}, {"HTTP_RANGE": "bytes=0-9,500-599"}, {"HTTP_RANGE": "bytes=5-"}):
            env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/data.bin", **headers}
            body = app(env, lambda status, headers, exc_info=None: None)
            next(iter(body))
            assert leaked(root) != [] or isinstance(body, list)
            body.close()  # type: ignore[attr-defined]
            assert leaked(root) == []

    def test_shrinking_file_fails_loudly(self, root: Path) -> None:
        for path, headers in (("/data.bin", {}), ("/data.bin", {"HTTP_RANGE": "bytes=0-9,-100"})):
            app = Static(root)
            env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, **headers}
            body = app(env, lambda status, headers, exc_info=None: None)
            os.truncate(root / "data.bin", 50)
            with pytest.raises(FileChanged):
                b"".join(body)
            body.close()  # type: ignore[attr-defined]
            (root / "data.bin").write_bytes(DATA)
        assert leaked(root) == []

    def test_multipart_failure_counts_every_chunk_written_before_it(self, root: Path) -> None:
        app = Static(root)
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/data.bin", "HTTP_RANGE": "bytes=0-9,-100"}
        body = app(env, lambda status, headers, exc_info=None: None)
        written = [next(body), next(body), next(body)]  # head, first range, second head
        os.truncate(root / "data.bin", 50)
        with pytest.raises(FileChanged):
            next(body)  # the server asked again, so the second head was written
        body.close()  # type: ignore[attr-defined]
        (root / "data.bin").write_bytes(DATA)
        assert body.outcome == "failed"  # type: ignore[attr-defined]
        assert body.bytes_sent == sum(map(len, written))  # type: ignore[attr-defined]
        assert leaked(root) == []


class TestFileResponse:
    @staticmethod
    def app_for(path: Path, **options: Any) -> Callable[..., Iterable[bytes]]:
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            return file_response(environ, path, **options)(environ, start_response)

        return app

    def test_download(self, root: Path) -> None:
        client = TestApp(self.app_for(root / "data.bin", download_name="rapport é.bin",
                                      as_attachment=True), lint=True)  # fmt: skip
        res = client.get("/anything")
        assert res.body == DATA
        disposition = res.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="rapport e.bin"')
        assert "filename*=UTF-8''rapport%20%C3%A9.bin" in disposition
        assert res.headers["Cache-Control"] == "no-cache"

    def test_inline_default_name_and_ranges(self, root: Path) -> None:
        client = TestApp(self.app_for(root / "hello.txt"), lint=True)
        res = client.get("/", headers={"Range": "bytes=0-3"}, status=206)
        assert res.body == TEXT[:4]
        assert res.headers["Content-Disposition"] == 'inline; filename="hello.txt"'
        etag = res.headers["ETag"]
        client.get("/", headers={"If-None-Match": etag}, status=304)
        assert client.head("/").body == b""

    def test_returned_from_a_flask_view(self, root: Path) -> None:
        flask = pytest.importorskip("flask")
        web = flask.Flask(__name__)

        @web.get("/report")
        def report() -> Any:
            return file_response(flask.request.environ, root / "data.bin", as_attachment=True)

        with web.test_client() as client:
            res = client.get("/report", headers={"Range": "bytes=10-19"})
            assert res.status_code == 206
            assert res.data == DATA[10:20]
            assert res.headers["Content-Disposition"] == 'attachment; filename="data.bin"'
            res.close()
        assert leaked(root) == []

    def test_missing_file_is_404_under_file_errors(self, root: Path) -> None:
        client = TestApp(FileErrors(self.app_for(root / "missing")), lint=True)
        res = client.get("/", status=404)
        assert str(root) not in res.text
        TestApp(FileErrors(self.app_for(root / "sub")), lint=True).get("/", status=404)


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Split a multipart/byteranges body strictly by its boundary (RFC 9110 §14.6)."""
    boundary = content_type.split("boundary=")[1].encode()
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    body = body[: -len(b"\r\n--" + boundary + b"--\r\n")]
    chunks = body.split(b"--" + boundary + b"\r\n")
    assert chunks[0] == b""
    parts = []
    for i, chunk in enumerate(chunks[1:]):
        head, _, data = chunk.partition(b"\r\n\r\n")
        if i < len(chunks) - 2:
            assert data.endswith(b"\r\n")
            data = data[:-2]
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        assert fields["Content-Type"] == "application/octet-stream"
        parts.append((fields["Content-Range"], data))
    return parts
