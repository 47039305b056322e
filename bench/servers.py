"""The servers the harness starts, and what it reads about them from /proc.

gunicorn comes from :class:`wsgipipe.testing.GunicornServer`; nginx (the
ceiling) is started here from Debian's package with a config of our own.
Everything listens on 127.0.0.1 and is stopped by its context manager.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from wsgipipe.testing import GunicornServer, wait_until

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


def gunicorn(app: str, data: str, **options: Any) -> GunicornServer:
    """A gunicorn running ``bench.apps:build(app)`` over ``data`` (not started)."""
    env = {
        "BENCH_DATA": data,
        "BENCH_TRANSFER_LOG": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return GunicornServer(f"bench.apps:build({app!r})", env=env, cwd=REPO, **options)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in text.split()]


def tree(pid: int) -> list[int]:
    """``pid`` and its children (a master and its workers)."""
    return [pid, *children(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = text.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return total / _TICKS


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (proc(5): writing 5 to clear_refs); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


_NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
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
        root {root};
    }}
}}
"""


class Nginx:
    """nginx serving ``root`` on 127.0.0.1: one worker, sendfile on, no access log."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="wsgipipe-bench-nginx-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        # As root, nginx workers would drop to "nobody", who may not read the
        # data directory; keep the workers as the user running the bench.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
        conf = Path(self.tmp, "nginx.conf")
        conf.write_text(_NGINX_CONF.format(user=user, tmp=self.tmp, port=self.port, root=self.root))
        cmd = [binary, "-p", self.tmp, "-c", str(conf), "-e", f"{self.tmp}/error.log"]
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until(self._ready, 10.0, 0.05):
            self.__exit__()
            raise RuntimeError(f"nginx did not start: {self._errors()}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {self._errors()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return bool(children(self.pid))

    def _errors(self) -> str:
        try:
            return Path(self.tmp, "error.log").read_text()[-2000:]
        except OSError:
            return "(no error log)"

    def __exit__(self, *exc: object) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)
