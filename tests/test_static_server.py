"""Static under a real gunicorn (zero-copy proof) and behind a real nginx (offload).

One gunicorn serves three mounts of the same root: ``/plain`` (Static, so
full and single-range bodies go through gunicorn's sendfile), ``/tee``
(the same behind a Tee, read in Python) and ``/offload`` (X-Accel-Redirect
headers only). nginx proxies to it and serves the offloaded files from an
``internal`` location.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsgipipe.testing import GunicornServer, TraceUnavailable, trace_syscalls, wait_until
from wsgipipe.testing._matrix import Nginx, nginx_binary

pytestmark = pytest.mark.server

SIZE = 3 * 1024 * 1024 + 17

APP = """
import logging
import os
import sys

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from wsgipipe import Static, Tee, TransferLog
from wsgipipe.sinks import Digest

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("transfer %(message)s"))
logging.getLogger("wsgipipe").addHandler(handler)
logging.getLogger("wsgipipe").setLevel(logging.INFO)

root = os.environ["STATIC_ROOT"]
static = Static(root)
app = TransferLog(
    DispatcherMiddleware(
        static,
        {
            "/plain": static,
            "/tee": Tee(static, Digest()),
            "/offload": Static(root, offload="x-accel-redirect", offload_prefix="/_files/"),
        },
    )
)
"""


@dataclass
class Site:
    server: GunicornServer
    root: Path
    content: bytes

    def get(
        self, path: str, headers: dict[str, str] | None = None, *, port: int | None = None,
        method: str = "GET",
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", port or self.server.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            res = conn.getresponse()
            return res.status, dict(res.getheaders()), res.read()
        finally:
            conn.close()

    def line(self, path: str) -> str:
        """The transfer line gunicorn logged for ``path``."""
        pattern = rf"transfer (?:GET|HEAD) {re.escape(path)} .*"
        assert self.server.wait_for_log(pattern), self.server.log[-2000:]
        return re.findall(pattern, self.server.log)[0]

    def fresh(self, name: str) -> str:
        """A new name for big.bin, so that each test finds its own transfer line."""
        os.link(self.root / "big.bin", self.root / name)
        return name


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("static-site")
    root = base / "root"
    root.mkdir()
    content = os.urandom(SIZE)
    (root / "big.bin").write_bytes(content)
    (root / "small.txt").write_bytes(b"small file\n")
    (root / "a b.txt").write_bytes(b"spaced name\n")
    (root / "sub").mkdir()
    (root / "sub" / "page.html").write_bytes(b"<p>page</p>")
    (root / "link-etc").symlink_to("/etc")
    (base / "app").mkdir()
    (base / "app" / "static_site.py").write_text(APP)
    env = {"STATIC_ROOT": str(root)}
    with GunicornServer("static_site:app", cwd=base / "app", env=env, timeout=10) as server:
        yield Site(server, root, content)


class TestZeroCopy:
    def test_full_response_goes_via_sendfile(self, site: Site) -> None:
        name = site.fresh("full.bin")
        status, _, body = site.get(f"/plain/{name}")
        assert status == 200
        assert body == site.content
        line = site.line(f"/plain/{name}")
        assert f"200 finished {SIZE}/{SIZE} B" in line
        assert "via=sendfile" in line

    def test_range_goes_via_sendfile_from_the_offset(self, site: Site) -> None:
        name = site.fresh("range.bin")
        status, headers, body = site.get(f"/plain/{name}", {"Range": "bytes=1000-2000999"})
        assert status == 206
        assert body == site.content[1000:2001000]
        assert headers["Content-Range"] == f"bytes 1000-2000999/{SIZE}"
        line = site.line(f"/plain/{name}")
        assert "206 finished 2000000/2000000 B" in line
        assert "via=sendfile" in line

    def test_with_a_tee_the_same_bytes_go_via_python(self, site: Site) -> None:
        status, _, body = site.get("/tee/big.bin", {"Range": "bytes=1000-2000999"})
        assert status == 206
        assert body == site.content[1000:2001000]
        line = site.line("/tee/big.bin")
        assert "via=python" in line
        assert "sha256=" in line

    def test_multipart_goes_via_python(self, site: Site) -> None:
        name = site.fresh("multi.bin")
        status, headers, body = site.get(f"/plain/{name}", {"Range": "bytes=0-9,-10"})
        assert status == 206
        assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
        assert site.content[:10] in body and site.content[-10:] in body
        assert int(headers["Content-Length"]) == len(body)
        assert "via=python" in site.line(f"/plain/{name}")

    def test_sendfile_syscalls_counted_with_strace(self, site: Site) -> None:
        worker = site.server.worker_pids()[0]
        try:
            with trace_syscalls(worker, ["sendfile"], site.root.parent / "strace.out") as out:
                assert site.get("/plain/big.bin", {"Range": "bytes=5-"})[2] == site.content[5:]
                assert site.get("/tee/small.txt")[2] == b"small file\n"
        except TraceUnavailable as exc:
            pytest.skip(str(exc))
        calls = re.findall(r"sendfile\(\d+, \d+, \[?(\d+)\]?.*= (\d+)", out.read_text())
        assert calls, out.read_text()
        assert sum(int(sent) for _, sent in calls) == SIZE - 5  # all of it by the kernel
        assert min(int(offset) for offset, _ in calls) == 5


class TestOverTheWire:
    ATTACKS = (
        "/plain/../etc/passwd",
        "/plain/..%2f..%2fetc/passwd",
        "/plain/%2e%2e/%2e%2e/etc/passwd",
        "/plain/c:/windows/win.ini",
        "/plain/c%3a%5cwindows%5cwin.ini",
        "/plain/sub/NUL",
        "/plain/sub/../../static-site0/app/static_site.py",
        "/plain/link-etc/passwd",
        "/plain/small.txt%00.png",
        "/plain/%2e%2e%2fapp/static_site.py",
    )

    def raw(self, site: Site, target: str) -> tuple[int, bytes]:
        """Send the request line exactly as written: no client normalization."""
        with socket.create_connection(("127.0.0.1", site.server.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def test_attacks_get_the_plain_404(self, site: Site) -> None:
        expected = self.raw(site, "/plain/nope.txt")
        assert expected[0] == 404
        for target in self.ATTACKS:
            assert self.raw(site, target) == expected, target
        assert site.server.open_files(site.root) == []

    def test_files_released_after_everything(self, site: Site) -> None:
        with socket.create_connection(("127.0.0.1", site.server.port), timeout=10) as sock:
            sock.sendall(b"GET /plain/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1024)  # then hang up mid-body
        assert wait_until(lambda: site.server.open_files(site.root) == [], 5)


# -- nginx -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nginx(site: Site) -> Iterator[int]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (make test installs it from Debian's packages)")
    with Nginx(site.root, upstream=site.server.port, internal="/_files/") as server:
        yield server.port


class TestNginxOffload:
    def test_full_file_sent_by_nginx(self, site: Site, nginx: int) -> None:
        status, headers, body = site.get("/offload/big.bin", port=nginx)
        assert status == 200
        assert body == site.content
        assert headers["Server"].startswith("nginx")
        assert headers["Content-Length"] == str(SIZE)
        assert headers["Content-Type"] == "application/octet-stream"  # ours, kept by nginx
        assert headers["Cache-Control"] == "max-age=60"
        assert "X-Accel-Redirect" not in headers
        assert "200 finished 0/0 B" in site.line("/offload/big.bin")

    def test_range_served_by_nginx(self, site: Site, nginx: int) -> None:
        status, headers, body = site.get("/offload/big.bin", {"Range": "bytes=-100"}, port=nginx)
        assert status == 206
        assert body == site.content[-100:]
        assert headers["Content-Range"] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"

    def test_conditional_served_by_nginx(self, site: Site, nginx: int) -> None:
        _, first, _ = site.get("/offload/small.txt", port=nginx)
        status, _, body = site.get(
            "/offload/small.txt", {"If-None-Match": first["ETag"]}, port=nginx
        )
        assert status == 304
        assert body == b""
        since = {"If-Modified-Since": first["Last-Modified"]}
        assert site.get("/offload/small.txt", since, port=nginx)[0] == 304

    def test_head_and_encoded_names(self, site: Site, nginx: int) -> None:
        status, headers, body = site.get("/offload/big.bin", port=nginx, method="HEAD")
        assert (status, body, headers["Content-Length"]) == (200, b"", str(SIZE))
        assert site.get("/offload/a%20b.txt", port=nginx)[2] == b"spaced name\n"

    def test_internal_location_and_refusals(self, site: Site, nginx: int) -> None:
        assert site.get("/_files/small.txt", port=nginx)[0] == 404  # internal only
        assert site.get("/offload/link-etc/passwd", port=nginx)[0] == 404
        assert site.get("/offload/nope.txt", port=nginx)[0] == 404
