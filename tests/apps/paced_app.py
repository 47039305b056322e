"""A WSGI app for the pace tests (run by gunicorn from this folder).

Files from ``WSGIPIPE_TEST_ROOT`` through TransferLog and IdleTimeout with a
minimum rate of ``PACED_MIN_RATE`` bytes/s after ``PACED_GRACE`` seconds
(idle timeout ``PACED_IDLE_TIMEOUT``). Routes:

* ``/file/<name>``: the file as a FileStream (gunicorn's sendfile path where
  the worker has one);
* ``/python/<name>``: the same bytes through a Python loop (an Observed
  wrapper is not a file wrapper);
* ``/override/<name>``: the file with its own pace in ``environ["wsgipipe.pace"]``:
  no minimum rate, for this response only;
* ``/idle/<name>``: its own pace too: a 1 s idle timeout and no minimum rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from wsgipipe import FileErrors, FileStream, IdleTimeout, Observed, Pace, TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")
IDLE = float(os.environ.get("PACED_IDLE_TIMEOUT", "30"))
OWN_PACE = {"override": Pace(idle_timeout=IDLE), "idle": Pace(idle_timeout=1.0)}


def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    route, _, name = environ["PATH_INFO"].lstrip("/").partition("/")
    full = safe_join(ROOT, name)
    if full is None or route not in ("file", "python", "override", "idle"):
        raise FileNotFoundError(name)
    stream = FileStream(full)
    if route in OWN_PACE:
        environ["wsgipipe.pace"] = OWN_PACE[route]
    start_response("200 OK", [("Content-Length", str(stream.size))])
    return Observed(stream) if route == "python" else stream


app = TransferLog(
    IdleTimeout(
        FileErrors(files),
        IDLE,
        min_rate=os.environ.get("PACED_MIN_RATE", "4k"),
        grace=float(os.environ.get("PACED_GRACE", "1")),
    )
)
