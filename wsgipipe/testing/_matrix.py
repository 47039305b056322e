"""Launchers for wsgipipe's own server matrix: waitress, werkzeug, wsgiref, uWSGI.

Scaffolding for the project's tests and benchmarks, not public API: import
it from here. :class:`MatrixServer` is a :class:`ServerProcess` like
:class:`~wsgipipe.testing.GunicornServer`; waitress, werkzeug's development
server and wsgiref run in one process started through :func:`serve`, uWSGI
with a master and ``workers`` workers.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._process import ServerProcess

__all__ = ["SERVERS", "MatrixServer", "serve"]

#: The WSGI servers :class:`MatrixServer` knows how to start.
SERVERS = ("waitress", "werkzeug", "wsgiref", "uwsgi")
_UWSGI_BOUND = re.compile(r"bound to TCP address 127\.0\.0\.1:(\d+)")


class MatrixServer(ServerProcess):
    """``server`` (one of :data:`SERVERS`) serving ``app`` on 127.0.0.1.

    uWSGI runs with this interpreter's environment as its ``home``.
    """

    def __init__(
        self,
        server: str,
        app: str,
        *,
        workers: int = 1,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}; expected one of {SERVERS}")
        super().__init__(
            app, workers=workers, args=args, env=env, cwd=cwd, startup_timeout=startup_timeout
        )
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
