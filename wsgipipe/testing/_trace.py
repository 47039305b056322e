"""strace as the kernel's own witness of a code path (``sendfile`` proves zero-copy)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ._process import wait_until

__all__ = ["TraceUnavailable", "trace_syscalls"]


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
