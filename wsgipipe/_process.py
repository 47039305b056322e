"""ProcessStream: a child process's stdout as a response body, released on every ending.

The child gets an argv list (never a shell) and its own session, hence its
own process group. Its stdout is read with ``poll(2)`` together with its
stderr (drained into a short tail, so the child never blocks on a full pipe)
and the client socket, so a client that leaves while the child is silent is
noticed at once. ``close()`` ends the whole group on every path: SIGTERM,
a bounded wait, SIGKILL for whatever is left, then the reap. The leader is
reaped last, so its process id (the group's id) cannot be reused by an
unrelated process while the group is signalled.

A non-zero exit before the first byte is a 502 (the stderr tail goes to the
log); after it, the body raises and the server aborts the connection.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING

from ._body import Observed, close_all
from ._connection import POLL_INTERVAL, Connection
from ._errors import ClientGone, ConfigurationError
from ._sources import Reader, SourceError, start_body
from ._stream import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["DEFAULT_GRACE", "ProcessFailed", "ProcessStream", "process_response"]

#: Seconds a child gets between SIGTERM and SIGKILL when the body closes early.
DEFAULT_GRACE = 2.0
#: Bytes of the child's stderr kept for the log line of a failure.
STDERR_TAIL = 2048
#: Requested size of the stdout pipe (the kernel caps it at pipe-max-size).
PIPE_SIZE = 1024 * 1024

Argv = Sequence[str | bytes | os.PathLike[str]]


class ProcessFailed(SourceError):
    """The child could not start (500) or exited non-zero (502)."""


def process_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    argv: Argv,
    *,
    content_type: str = "application/octet-stream",
    headers: Iterable[tuple[str, str]] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | None = None,
    grace: float = DEFAULT_GRACE,
) -> Iterable[bytes]:
    """Answer with the stdout of ``argv`` (a list: no shell), streamed as it comes.

    The child starts now and the status waits for its first output: a child
    that fails before writing anything gets a 502 (500 if it cannot start).
    A HEAD request gets the headers and starts nothing. ``stdin``, a file
    descriptor, becomes the child's standard input and is closed by wsgipipe.
    """
    response_headers = [("Content-Type", content_type), *headers]
    if environ.get("REQUEST_METHOD") == "HEAD":
        if stdin is not None:
            os.close(stdin)
        start_response("200 OK", response_headers)
        return []
    body = ProcessStream(argv, environ=environ, env=env, cwd=cwd, stdin=stdin, grace=grace)
    return start_body(environ, start_response, body, (200, response_headers))


class ProcessStream(Observed):
    """The stdout of a child process as a WSGI body (see the module docstring).

    Nothing runs until the first chunk is asked for. ``environ`` makes the
    reads disconnect-aware (see :class:`~wsgipipe.Connection`). ``env``
    replaces the child's whole environment, as in :class:`subprocess.Popen`.
    ``stdin`` is a file descriptor the stream owns: the child reads it as its
    standard input (``/dev/null`` without one) and ``close()`` closes it.
    ``grace`` is how long an early close waits after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        argv: Argv,
        *,
        environ: WSGIEnvironment | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: int | None = None,
        grace: float = DEFAULT_GRACE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not grace >= 0:
            raise ConfigurationError(f"grace must be zero or more seconds, not {grace!r}")
        connection = Connection(environ) if environ is not None else None
        self.child = _Child(_checked(argv), env, cwd, grace, chunk_size, connection)
        self.child.stdin = stdin
        super().__init__(self.child)

    @property
    def pid(self) -> int | None:
        """The child's process id (also its process group's), once started."""
        return self.child.proc.pid if self.child.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once reaped (negative: killed by that signal)."""
        return self.child.proc.returncode if self.child.proc is not None else None


def _checked(argv: Argv) -> list[str | bytes | os.PathLike[str]]:
    if isinstance(argv, (str, bytes)) or not argv:
        # A string would need a shell to split it: refused, not guessed.
        raise ConfigurationError(f"argv must be a non-empty list of arguments, not {argv!r}")
    return list(argv)


class _Child(Reader):
    """The reader behind a ProcessStream: spawn, poll, drain stderr, end the group."""

    def __init__(
        self,
        argv: list[str | bytes | os.PathLike[str]],
        env: Mapping[str, str] | None,
        cwd: str | os.PathLike[str] | None,
        grace: float,
        chunk_size: int,
        connection: Connection | None,
    ) -> None:
        self.argv = argv
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.grace = grace
        self.chunk_size = chunk_size
        self.connection = connection if connection is not None and connection.observable else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdin: int | None = None  # owned: closed once the child has its copy
        self.tail = b""
        self.exit_code: int | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return os.fsdecode(os.fspath(self.argv[0]))

    def _next(self) -> bytes:
        if self._closed:
            raise StopIteration
        proc = self.proc or self._spawn()
        while proc.stdout is not None and not proc.stdout.closed:
            chunk = self._read(proc.stdout.fileno())
            if chunk:
                return chunk
            proc.stdout.close()
        self._await_exit(proc)
        raise StopIteration

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL if self.stdin is None else self.stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                bufsize=0,
                start_new_session=True,  # its own process group, ended as one
            )
        except OSError as exc:
            raise ProcessFailed(f"cannot start {self.name!r}: {exc}", status_hint=500) from exc
        finally:
            self._close_stdin()
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        with suppress(OSError, AttributeError):
            # A bigger pipe (Linux, up to pipe-max-size) means fewer wake-ups
            # per megabyte; the default 64 KiB is one chunk.
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return self.proc

    def _close_stdin(self) -> None:
        fd, self.stdin = self.stdin, None
        if fd is not None:
            os.close(fd)

    def _read(self, stdout: int) -> bytes:
        """The next stdout bytes (``b""`` at end of file), stderr drained meanwhile.

        The pipe is non-blocking: while the child keeps it filled, a read is
        one system call; only an empty pipe costs a poll (which also drains
        stderr and watches the client).
        """
        while True:
            try:
                return os.read(stdout, self.chunk_size)
            except BlockingIOError:
                self._wait_readable([stdout])

    def _wait_readable(self, fds: list[int], timeout: float | None = None) -> list[int]:
        """Pipes in ``fds`` that are readable; stderr is drained on the way.

        Raises :class:`ClientGone` as soon as the client leaves; ``timeout``
        (seconds) bounds the wait, after which an empty list comes back.
        """
        proc = self.proc
        assert proc is not None
        err = proc.stderr.fileno() if proc.stderr is not None and not proc.stderr.closed else None
        poller = select.poll()
        for fd in [*fds, err]:
            if fd is not None:
                poller.register(fd, select.POLLIN)
        sock = self.connection.socket if self.connection is not None else None
        if sock is not None:
            poller.register(sock, select.POLLIN | select.POLLPRI)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = POLL_INTERVAL if self.connection is not None else timeout
            events = dict(poller.poll(None if slice_ is None else slice_ * 1000))
            if sock is not None and sock.fileno() in events:
                self._check_client()
                poller.unregister(sock)  # pipelined bytes: ask every slice instead
                sock = None
            elif not events:
                self._check_client()
            if err is not None and err in events:
                err = self._drain_stderr(proc, poller)
            ready = [fd for fd in fds if fd in events]
            if ready or (deadline is not None and time.monotonic() >= deadline):
                return ready

    def _check_client(self) -> None:
        if self.connection is not None and self.connection.gone():
            raise ClientGone("client disconnected")

    def _drain_stderr(self, proc: subprocess.Popen[bytes], poller: select.poll) -> int | None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        data = os.read(fd, 65536)
        if data:
            self.tail = (self.tail + data)[-STDERR_TAIL:]
            return fd
        poller.unregister(fd)
        proc.stderr.close()
        return None

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """After stdout's end: wait for the exit status (still draining stderr)."""
        while self.exit_code is None:
            self.exit_code = _exit_status(proc.pid, 0)
            if self.exit_code is None:
                self._wait_readable([], POLL_INTERVAL)
        if self.exit_code != 0:
            raise ProcessFailed(self._failure_text())

    def _failure_text(self) -> str:
        code = self.exit_code or 0
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        tail = self.tail.decode("utf-8", "replace").strip()
        return f"{self.name!r} {how}" + (f"; stderr: {tail}" if tail else "")

    def close(self) -> None:
        """End the process group and reap the child; idempotent."""
        proc = self.proc
        if self._closed or proc is None:
            self._closed = True
            self._close_stdin()
            return
        self._closed = True
        try:
            if _exit_status(proc.pid, 0) is None:
                _signal_group(proc.pid, signal.SIGTERM)
                _exit_status(proc.pid, self.grace)
            # Whatever is left of the group (a grandchild, a child that ignored
            # SIGTERM) is killed while the unreaped leader still holds its id.
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            pipes = [p.close for p in (proc.stdout, proc.stderr) if p is not None]
            close_all(*pipes, proc.wait)


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _exit_status(pid: int, timeout: float) -> int | None:
    """The child's exit status without reaping it (``WNOWAIT``), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return 0  # already reaped elsewhere (SIGCHLD ignored): nothing to report
        if info is not None and info.si_pid == pid:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(0.01, max(deadline - time.monotonic(), 0)))
