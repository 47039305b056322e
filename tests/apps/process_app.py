"""A WSGI app for the process source's real-server tests (gunicorn runs it from this folder).

Each route streams a small Python child written to misbehave in one way;
``WSGIPIPE_TEST_MARKS`` is a folder where the children leave marks (their
pids, the SIGTERM they ignored) for the tests to read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wsgipipe import IdleTimeout, TransferLog, process_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MARKS = os.environ.get("WSGIPIPE_TEST_MARKS", ".")

_PRELUDE = f"""
import os, signal, subprocess, sys, time
marks = {MARKS!r}
def mark(name, text):
    with open(os.path.join(marks, name), "a") as f:
        f.write(text)
out = sys.stdout.buffer
"""

#: Route -> child program. Every one of them would outlive its client if not ended.
CHILDREN = {
    # A grandchild in the same group, then output for ever.
    "/endless": """
sleeper = subprocess.Popen(["sleep", "60"])
mark("endless", f"{os.getpid()} {sleeper.pid}")
while True:
    out.write(b"e" * 65536); out.flush(); time.sleep(0.001)
""",
    # One chunk, then silence: only a disconnect-aware read sees the client leave.
    "/silent": """
mark("silent", str(os.getpid()))
out.write(b"s" * 1000); out.flush(); time.sleep(60)
""",
    # No output at all: the client leaves before the first byte.
    "/mute": """
mark("mute", str(os.getpid()))
time.sleep(60)
""",
    # Ignores SIGTERM: needs the SIGKILL after the grace period.
    "/stubborn": """
signal.signal(signal.SIGTERM, lambda *a: mark("stubborn-term", str(time.monotonic())))
mark("stubborn", str(os.getpid()))
out.write(b"t" * 1000); out.flush()
while True: time.sleep(0.05)
""",
    # Fails before any output; the detail is for the log only.
    "/fail-early": """
sys.stderr.write("secret-detail: cannot read the database\\n"); sys.exit(3)
""",
    # Fails after 100 KiB: a truncated body must not look complete.
    "/fail-late": """
out.write(b"l" * 102400); out.flush(); time.sleep(0.2)
sys.stderr.write("late-detail\\n"); sys.exit(4)
""",
    "/ok": """
sys.stderr.write("x" * 300000)  # more than a pipe holds: stderr must be drained
out.write(b"ok\\n" * 1000)
""",
}


def children(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    program = CHILDREN.get(environ.get("PATH_INFO", ""))
    if program is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such child\n"]
    argv = [sys.executable, "-c", _PRELUDE + program]
    return process_response(environ, start_response, argv, content_type="text/plain", grace=0.5)


# A client that reads nothing for 1 s is cut off: the stalled ending.
app = TransferLog(IdleTimeout(children, 1.0))
