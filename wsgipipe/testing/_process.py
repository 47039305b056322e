"""Real servers in child processes on 127.0.0.1: a generic launcher, and gunicorn.

:class:`ServerProcess` starts a command, waits until the server says where it
listens and its workers have the app loaded, and stops it (SIGTERM, then
SIGKILL). :class:`GunicornServer` is one kind; the other servers of
wsgipipe's own test matrix are in :mod:`wsgipipe.testing._matrix`. The server
writes to a log file that the test process does not keep open, so a leak
check never counts the launcher's own file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from ._gunicorn_conf import BOOTED
from ._leaks import fd_count, open_files

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["GunicornServer", "ProcessOptions", "ServerProcess", "wait_until"]

_LISTENING = re.compile(r"Listening at: https?://127\.0\.0\.1:(\d+)")
_BOOTED = re.compile(BOOTED.format(pid=r"(\d+)"))
_CONFIG = str(Path(__file__).with_name("_gunicorn_conf.py"))
_TAIL_LINES = 40


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


class ProcessOptions(TypedDict, total=False):
    """What every launcher takes besides the app."""

    #: How many processes must run the app before the server counts as started.
    workers: int
    #: Extra command-line arguments for the server.
    args: Sequence[str]
    #: Environment variables added to this process's own.
    env: dict[str, str] | None
    #: The server's working directory (where ``"module:app"`` is imported from).
    cwd: str | os.PathLike[str] | None
    #: Seconds to wait for the server to be ready.
    startup_timeout: float


class ServerProcess:
    """A server in a child process serving ``app`` on 127.0.0.1, any free port.

    A subclass says how to start it (:meth:`command`), which log line names
    its port (``port_pattern``) and which processes run the app
    (:meth:`worker_pids`). Use as a context manager; it stops by itself.
    Start-up fails with the end of the server's log when the server exits
    or is not ready within ``startup_timeout`` seconds.
    """

    kind = "server"
    port_pattern = _LISTENING

    def __init__(self, app: str, **options: Unpack[ProcessOptions]) -> None:
        self.app = app
        self.workers = options.get("workers", 1)
        self.args = list(options.get("args", ()))
        self.env = options.get("env")
        self.cwd = options.get("cwd")
        self.startup_timeout = options.get("startup_timeout", 20.0)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> Self:
        env = {**os.environ, **(self.env or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        fd, self.log_path = tempfile.mkstemp(prefix=f"wsgipipe-{self.kind}-", suffix=".log")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=env,
            )
        finally:
            os.close(fd)  # the server has its own copy
        if not wait_until(self._ready, self.startup_timeout, 0.05):
            self.stop()
            raise RuntimeError(
                f"{self.kind} was not ready within {self.startup_timeout}s" + self._tail()
            )
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            raise RuntimeError(f"{self.kind} exited with {code} before it was ready" + self._tail())
        if not self.port:
            self.port = self.find_port()
        return bool(self.port) and self.booted()

    def find_port(self) -> int:
        """The port the server says it bound (0 while it has not said so)."""
        match = self.port_pattern.search(self.log)
        return int(match.group(1)) if match else 0

    def booted(self) -> bool:
        """Whether every worker has the app loaded (here: is running)."""
        return len(self.worker_pids()) >= self.workers

    def _tail(self) -> str:
        lines = self.log.splitlines()[-_TAIL_LINES:]
        return f"; the end of its log ({self.log_path}):\n" + "\n".join(lines)

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
        return proc.returncode if proc is not None else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.log_path is not None:
            with suppress(FileNotFoundError):
                os.unlink(self.log_path)

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
        """Everything the server and the app wrote to stdout and stderr so far."""
        if self.log_path is None:
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def worker_pids(self) -> list[int]:
        """The processes that run the app: the server itself, while it runs."""
        running = self.process is not None and self.process.poll() is None
        return [self.pid] if running else []

    def child_pids(self) -> list[int]:
        """The server's live child processes (a pre-forking server's workers)."""
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
        counts = {pid: fd_count(pid) for pid in self.worker_pids()}
        return {pid: count for pid, count in counts.items() if count is not None}

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, count: int = 1) -> bool:
        """Wait until ``pattern`` (a regex) matches at least ``count`` times in the log."""
        regex = re.compile(pattern)
        return wait_until(lambda: len(regex.findall(self.log)) >= count, timeout, 0.02)


class GunicornServer(ServerProcess):
    """A real gunicorn serving ``app`` (``"module:callable"``) on 127.0.0.1.

    Ready once every worker has imported the app: ``"missing.module:app"``
    fails at start-up with the end of gunicorn's log, not later in the test.
    Without ``config=`` no ``gunicorn.conf.py`` is read.
    """

    kind = "gunicorn"

    def __init__(
        self,
        app: str,
        *,
        worker_class: str = "gthread",
        threads: int = 4,
        timeout: int = 30,
        config: str | None = None,
        **options: Unpack[ProcessOptions],
    ) -> None:
        if config is not None and not config.startswith("python:"):
            config = os.path.join(os.fspath(options.get("cwd") or os.getcwd()), config)
        if config is not None:
            options["env"] = {**(options.get("env") or {}), "WSGIPIPE_GUNICORN_CONFIG": config}
        super().__init__(app, **options)
        self.worker_class = worker_class
        self.threads = threads
        self.timeout = timeout
        self.config = config

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gunicorn", self.app]
        cmd += ["--bind", "127.0.0.1:0", "--worker-class", self.worker_class]
        cmd += ["--workers", str(self.workers), "--threads", str(self.threads)]
        cmd += ["--timeout", str(self.timeout), "--graceful-timeout", "5"]
        cmd += ["--no-control-socket", "--log-level", "info", "--config", _CONFIG]
        return cmd + self.args

    def worker_pids(self) -> list[int]:
        """The arbiter's live worker processes."""
        return self.child_pids()

    def booted(self) -> bool:
        booted = {int(pid) for pid in _BOOTED.findall(self.log)}
        return len(booted.intersection(self.worker_pids())) >= self.workers
