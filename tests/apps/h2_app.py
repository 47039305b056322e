"""A WSGI app for the HTTP/2 and TLS tests (run by gunicorn from this folder).

Files from ``WSGIPIPE_TEST_ROOT`` through TransferLog and IdleTimeout
(``H2_IDLE_TIMEOUT`` seconds; minimum rate ``H2_MIN_RATE``, off by default,
after ``H2_GRACE`` seconds).
Routes:

* ``/file/<name>``: the file as a FileStream;
* ``/slow/<name>``: the same behind a Delay of ``H2_DELAY`` seconds per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from wsgipipe import Delay, FileErrors, FileStream, IdleTimeout, TransferLog, log_to_stderr

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")


def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    name = environ["PATH_INFO"].rpartition("/")[2]
    full = safe_join(ROOT, name)
    if full is None:
        raise FileNotFoundError(name)
    stream = FileStream(full)
    start_response("200 OK", [("Content-Length", str(stream.size))])
    return stream


slow = Delay(files, float(os.environ.get("H2_DELAY", "20")))


def routes(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"].startswith("/slow/"):
        return slow(environ, start_response)
    return files(environ, start_response)


log_to_stderr()
app = TransferLog(
    IdleTimeout(
        FileErrors(routes),
        float(os.environ.get("H2_IDLE_TIMEOUT", "30")),
        min_rate=os.environ.get("H2_MIN_RATE") or None,
        grace=float(os.environ.get("H2_GRACE", "5")),
    )
)
