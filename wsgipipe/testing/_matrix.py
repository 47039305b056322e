"""Launchers for wsgipipe's own server matrix: waitress, werkzeug, wsgiref, uWSGI, nginx.

Scaffolding for the project's tests and benchmarks, not public API: import
it from here. Each is a :class:`ServerProcess` like
:class:`~wsgipipe.testing.GunicornServer`. :class:`MatrixServer` runs
waitress, werkzeug's development server and wsgiref in one process started
through :func:`serve`, and uWSGI with a master and ``workers`` workers.
:class:`Nginx` is the one nginx launcher of the bench and the tests.
"""

from __future__ import annotations

import importlib
import os
import pwd
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ._process import ServerProcess

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._process import ProcessOptions

__all__ = ["SERVERS", "MatrixServer", "Nginx", "free_port", "nginx_binary", "serve"]

#: The WSGI servers :class:`MatrixServer` knows how to start.
SERVERS = ("waitress", "werkzeug", "wsgiref", "uwsgi")
_UWSGI_BOUND = re.compile(r"bound to TCP address 127\.0\.0\.1:(\d+)")


class MatrixServer(ServerProcess):
    """``server`` (one of :data:`SERVERS`) serving ``app`` on 127.0.0.1.

    uWSGI runs with this interpreter's environment as its ``home``.
    """

    def __init__(self, server: str, app: str, **options: Unpack[ProcessOptions]) -> None:
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}; expected one of {SERVERS}")
        super().__init__(app, **options)
        self.server = self.kind = server
        if server == "uwsgi":
            self.port_pattern = _UWSGI_BOUND

    def command(self) -> list[str]:
        if self.server == "uwsgi":
            return self._uwsgi_command()
        launch = f"from {__name__} import serve; serve({self.server!r}, {self.app!r})"
        return [sys.executable, "-c", launch, *self.args]

    def _uwsgi_command(self) -> list[str]:
        module, _, name = self.app.partition(":")
        cmd = [str(Path(sys.executable).with_name("uwsgi")), "--http-socket", "127.0.0.1:0"]
        cmd += ["--master", "--workers", str(self.workers), "--die-on-term", "--need-app"]
        cmd += ["--home", sys.prefix, "--pythonpath", os.fspath(self.cwd or os.getcwd())]
        cmd += ["--module", f"{module}:{name or 'application'}", "--enable-threads"]
        return cmd + self.args

    def worker_pids(self) -> list[int]:
        """The processes that run the app: uWSGI's workers, else the server itself."""
        return self.child_pids() if self.server == "uwsgi" else super().worker_pids()


def serve(server: str, app: str) -> None:
    """Run ``app`` (``"module:callable"``) under ``server`` on 127.0.0.1, any free port.

    Prints ``Listening at: http://127.0.0.1:<port>`` once bound, then serves
    until killed.
    """
    module, _, name = app.partition(":")
    sys.path.insert(0, os.getcwd())
    application = getattr(importlib.import_module(module), name or "application")
    runner = _make_server(server, application)
    print(f"Listening at: http://127.0.0.1:{runner.port}", file=sys.stderr, flush=True)
    runner.run()


class _Runner:
    def __init__(self, port: int, run: Callable[[], object]) -> None:
        self.port = port
        self.run = run


def _make_server(server: str, application: Callable[..., object]) -> _Runner:
    if server == "waitress":
        import waitress

        srv = waitress.create_server(application, host="127.0.0.1", port=0, threads=4)
        return _Runner(srv.effective_port, srv.run)
    if server == "werkzeug":
        from werkzeug.serving import make_server

        wsrv = make_server("127.0.0.1", 0, application, threaded=True)  # type: ignore[arg-type]
        return _Runner(wsrv.port, wsrv.serve_forever)
    if server == "wsgiref":
        from wsgiref.simple_server import make_server as make_wsgiref

        rsrv = make_wsgiref("127.0.0.1", 0, application)  # type: ignore[arg-type]
        return _Runner(rsrv.server_port, rsrv.serve_forever)
    raise ValueError(f"serve() runs waitress, werkzeug or wsgiref, not {server!r}")


# -- nginx ------------------------------------------------------------------------
def nginx_binary() -> str | None:
    """Debian's nginx, if installed (``/usr/sbin`` is not on every PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""
_SERVE_ROOT = "        root {root};"
# X-Accel-Redirect: the app answers with headers only, nginx sends the file
# from an internal location that clients cannot ask for directly.
_PROXY = """\
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
        location {internal} {{ internal; alias {root}/; }}"""


class Nginx(ServerProcess):
    """nginx on 127.0.0.1: one worker, sendfile on, no access log.

    Serves ``root`` itself, or with ``upstream`` (a port) proxies every
    request there and sends ``X-Accel-Redirect`` answers from ``root``
    through the internal location ``internal``.
    """

    kind = "nginx"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        upstream: int | None = None,
        internal: str = "/_files/",
    ) -> None:
        super().__init__(os.fspath(root), startup_timeout=10.0)
        self.root = os.fspath(root)
        self.upstream = upstream
        self.internal = internal
        self.tmp = tempfile.mkdtemp(prefix="wsgipipe-nginx-")

    def command(self) -> list[str]:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (.ci/system-deps installs it)")
        self.port = free_port()
        # As root, nginx workers would drop to "nobody", who may not read a
        # private temporary directory: keep them as the user running this.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.getuid() == 0 else ""
        if self.upstream is None:
            locations = _SERVE_ROOT.format(root=self.root)
        else:
            locations = _PROXY.format(
                upstream=self.upstream, internal=self.internal, root=self.root
            )
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                _NGINX_CONF.format(user=user, tmp=self.tmp, port=self.port, locations=locations)
            )
        return [binary, "-p", self.tmp, "-c", conf, "-e", "stderr"]

    def booted(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return bool(self.worker_pids())

    def worker_pids(self) -> list[int]:
        return self.child_pids()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.tmp, ignore_errors=True)
