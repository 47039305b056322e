"""Helpers for test suites: prove that an app releases its files.

Everything here is public and used by wsgipipe's own tests (docs/testing.md):

* :class:`LeakCheck` / :func:`no_leaked_files`: fail when a block leaves a
  file open (``/proc/self/fd`` diff plus ``ResourceWarning``);
* :func:`download`, :func:`disconnect_after`, :func:`hang_up_after`,
  :func:`stalled_client`, :func:`slow_client`: play the server's part
  against any WSGI app (or WebTest ``TestApp``) for a client that reads
  everything, leaves, stalls or crawls;
* :class:`TransferRecorder`: the :class:`~wsgipipe.Transfer` records of a test;
* :class:`GunicornServer`, :func:`open_files`, :func:`wait_until`: a real
  gunicorn subprocess on an ephemeral 127.0.0.1 port, and the truth read
  from ``/proc/<pid>/fd`` rather than from warnings; :func:`raw_request`,
  :func:`transfer_lines` and :func:`wait_for_transfer` to drive it and read
  its transfer lines.

The pytest fixtures built on these live in :mod:`wsgipipe.pytest_plugin`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ._clients import (
    Download,
    disconnect_after,
    download,
    hang_up_after,
    slow_client,
    stalled_client,
)
from ._leaks import LeakCheck, LeakedFiles, fd_table
from ._recorder import TransferRecorder

__all__ = [
    "SERVERS",
    "Download",
    "GunicornServer",
    "LeakCheck",
    "LeakedFiles",
    "ServerProcess",
    "TraceUnavailable",
    "TransferRecorder",
    "disconnect_after",
    "download",
    "fd_table",
    "hang_up_after",
    "no_leaked_files",
    "open_files",
    "raw_request",
    "serve",
    "slow_client",
    "stalled_client",
    "trace_syscalls",
    "transfer_lines",
    "wait_for_transfer",
    "wait_until",
]

_EMPTY_CONFIG = Path(__file__).with_name("_empty_gunicorn_conf.py")
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def open_files(pid: int | str = "self", under: str | os.PathLike[str] | None = None) -> list[str]:
    """Paths a process has open, read from ``/proc/<pid>/fd``.

    With ``under``, only paths inside that directory (resolved). Sockets,
    pipes and descriptors that vanish while we look are skipped.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    prefix = os.path.realpath(under) + os.sep if under is not None else None
    found: list[str] = []
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if prefix is None or target.startswith(prefix) or target == prefix[:-1]:
            found.append(target)
    return sorted(found)


def no_leaked_files(under: str | os.PathLike[str] | None = None) -> LeakCheck:
    """``with no_leaked_files(tmp_path): ...`` fails if the block leaves a file open."""
    return LeakCheck(under)


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class GunicornServer:
    """A real gunicorn serving ``app`` (``"module:callable"``) on 127.0.0.1.

    Use as a context manager; it stops by itself (SIGTERM, then SIGKILL).
    ``log`` holds everything gunicorn and the app wrote to stderr, so tests
    can wait for wsgipipe's transfer lines.
    """

    def __init__(
        self,
        app: str,
        *,
        worker_class: str = "gthread",
        workers: int = 1,
        threads: int = 4,
        timeout: int = 30,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        config: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.app = app
        self.worker_class = worker_class
        self.workers = workers
        self.threads = threads
        self.timeout = timeout
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.config = config
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._logfile = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="wsgipipe-gunicorn-", suffix=".log", delete=False
        )

    # -- lifecycle ----------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gunicorn", self.app]
        cmd += ["--bind", "127.0.0.1:0", "--worker-class", self.worker_class]
        cmd += ["--workers", str(self.workers), "--threads", str(self.threads)]
        cmd += ["--timeout", str(self.timeout), "--graceful-timeout", "5"]
        cmd += ["--no-control-socket", "--log-level", "info"]
        # An explicit config keeps a gunicorn.conf.py in the working directory
        # from changing what the test asked for.
        cmd += ["--config", self.config or str(_EMPTY_CONFIG)]
        return cmd + self.args

    def start(self) -> GunicornServer:
        env = dict(os.environ)
        env.update(self.env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            env=env,
        )
        if not wait_until(self._ready, self.startup_timeout, 0.05):
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log}")
        match = _LISTENING.search(self.log)
        if match and not self.port:
            self.port = int(match.group(1))
        return bool(self.port) and len(self.worker_pids()) >= self.workers

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if not self._logfile.closed:
            self._logfile.close()
        return proc.returncode if proc is not None else None

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with suppress(FileNotFoundError):
            os.unlink(self._logfile.name)

    # -- what tests look at ---------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        with open(self._logfile.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def worker_pids(self) -> list[int]:
        """The arbiter's live worker processes."""
        if self.process is None:
            return []
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def open_files(self, under: str | os.PathLike[str] | None = None) -> list[str]:
        """Files open in any worker, optionally only those under a directory."""
        return [path for pid in self.worker_pids() for path in open_files(pid, under)]

    def fd_counts(self) -> dict[int, int]:
        """Descriptor count per worker pid."""
        counts: dict[int, int] = {}
        for pid in self.worker_pids():
            try:
                counts[pid] = len(os.listdir(f"/proc/{pid}/fd"))
            except FileNotFoundError:
                continue
        return counts

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, count: int = 1) -> bool:
        """Wait until ``pattern`` (a regex) matches at least ``count`` times in the log."""
        regex = re.compile(pattern)
        return wait_until(lambda: len(regex.findall(self.log)) >= count, timeout, 0.02)


@contextmanager
def gunicorn_server(app: str, **options: object) -> Iterator[GunicornServer]:
    """``with gunicorn_server("pkg.mod:app", worker_class="sync") as server: ...``"""
    server = GunicornServer(app, **options)  # type: ignore[arg-type]
    with server:
        yield server


def raw_request(
    server: GunicornServer | int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> socket.socket:
    """Send one HTTP/1.1 request to 127.0.0.1 and return the open socket.

    The caller decides what the client does next: read a little and stall,
    close early, or read everything. Close it (``with raw_request(...) as
    sock:``) when done.
    """
    port = server if isinstance(server, int) else server.port
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    except BaseException:
        sock.close()
        raise
    return sock


def transfer_lines(log: str, path: str | None = None, *, method: str = "GET") -> list[str]:
    """The TransferLog lines in ``log`` (any logging format), from the method on.

    With ``path``, only that path's lines, such as
    ``GET /big.bin 200 aborted 65536/1073741824 B 1.20s``.
    """
    target = r"\S+" if path is None else re.escape(path)
    pattern = (
        rf"\b{re.escape(method)} {target} (?:\d{{3}}|-) (?:finished|aborted|failed|running) .*"
    )
    return re.findall(pattern, log)


def wait_for_transfer(
    server: GunicornServer, path: str, *, count: int = 1, timeout: float = 5.0, method: str = "GET"
) -> str:
    """Wait for the ``count``-th transfer line of ``path`` in the server log and return it.

    Fails with the end of the log if it does not come: the transfer line is
    written at ``close()``, which can come after the client saw its last byte.
    """
    if not wait_until(
        lambda: len(transfer_lines(server.log, path, method=method)) >= count, timeout
    ):
        raise AssertionError(
            f"no transfer line #{count} for {method} {path} within {timeout}s:\n"
            + server.log[-3000:]
        )
    return transfer_lines(server.log, path, method=method)[count - 1]


#: The WSGI servers :class:`ServerProcess` knows how to start.
SERVERS = ("waitress", "werkzeug", "wsgiref", "uwsgi")
_UWSGI_BOUND = re.compile(r"bound to TCP address 127\.0\.0\.1:(\d+)")


class ServerProcess(GunicornServer):
    """A real non-gunicorn WSGI server serving ``app`` on 127.0.0.1.

    ``server`` is one of :data:`SERVERS`. waitress, werkzeug's development
    server and wsgiref run in one process (:func:`serve` binds port 0 and
    prints the port); uWSGI runs with a master and ``workers`` workers,
    using this interpreter's environment as its ``home``. The lifecycle and
    what tests look at (``url``, ``log``, ``open_files``, ``fd_counts``,
    ``wait_for_log``) are those of :class:`GunicornServer`.
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
        self.server = server

    def command(self) -> list[str]:
        if self.server == "uwsgi":
            return self._uwsgi_command()
        launch = f"from wsgipipe.testing import serve; serve({self.server!r}, {self.app!r})"
        return [sys.executable, "-c", launch, *self.args]

    def _uwsgi_command(self) -> list[str]:
        module, _, name = self.app.partition(":")
        cmd = [str(Path(sys.executable).with_name("uwsgi")), "--http-socket", "127.0.0.1:0"]
        cmd += ["--master", "--workers", str(self.workers), "--die-on-term", "--need-app"]
        cmd += ["--home", sys.prefix, "--pythonpath", os.fspath(self.cwd or os.getcwd())]
        cmd += ["--module", f"{module}:{name or 'application'}", "--enable-threads"]
        return cmd + self.args

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.server} exited with {self.process.returncode}:\n{self.log}")
        pattern = _UWSGI_BOUND if self.server == "uwsgi" else _LISTENING
        match = pattern.search(self.log)
        if match and not self.port:
            self.port = int(match.group(1))
        return bool(self.port) and len(self.worker_pids()) >= self.workers

    def worker_pids(self) -> list[int]:
        """The processes that run the app: uWSGI's workers, else the server itself."""
        if self.server == "uwsgi":
            return super().worker_pids()
        return [self.pid] if self.process is not None and self.process.poll() is None else []


def serve(server: str, app: str) -> None:
    """Run ``app`` (``"module:callable"``) under ``server`` on 127.0.0.1, any free port.

    Prints ``Listening at: http://127.0.0.1:<port>`` once bound, then serves
    until killed. Used by :class:`ServerProcess`; works as a quick manual
    check too.
    """
    import importlib

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


class TraceUnavailable(RuntimeError):
    """strace is missing or may not attach here (no ptrace); tests skip on it."""


def _traced(pid: int) -> bool:
    """Whether every thread of ``pid`` has a tracer attached."""
    try:
        statuses = [(t / "status").read_text() for t in Path(f"/proc/{pid}/task").iterdir()]
    except FileNotFoundError:
        return False
    return all(re.search(r"^TracerPid:\s+[1-9]", s, re.MULTILINE) for s in statuses)


@contextmanager
def trace_syscalls(pid: int, syscalls: Sequence[str], output: Path) -> Iterator[Path]:
    """Record ``syscalls`` made by every thread of ``pid`` into ``output`` with strace.

    The block runs only once strace is attached to all threads, so nothing is
    missed; the file is complete when the block exits. The kernel's own calls
    are the independent witness of a code path (e.g. ``sendfile`` proves
    zero-copy). Raises :class:`TraceUnavailable` if strace cannot run here.
    """
    strace = shutil.which("strace")
    if strace is None:
        raise TraceUnavailable("strace is not installed")
    cmd = [strace, "-f", "-qq", "-e", "trace=" + ",".join(syscalls), "-o", str(output)]
    tracer = subprocess.Popen([*cmd, "-p", str(pid)], stderr=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: _traced(pid) or tracer.poll() is not None, 10):
            raise TraceUnavailable("strace did not attach within 10 s")
        if tracer.poll() is not None:
            raise TraceUnavailable("strace cannot attach here (ptrace not permitted)")
        yield output
    finally:
        if tracer.poll() is None:
            tracer.terminate()  # strace detaches and flushes on SIGTERM
        tracer.wait(10)
