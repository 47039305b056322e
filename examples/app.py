"""The example app: serve ``WSGIPIPE_ROOT`` through wsgipipe's public API.

Run it with ``gunicorn examples.app:app`` (``make run``). Every response goes
through FileErrors (clean 404/403/500) and TransferLog (one line per response
at close()).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from wsgipipe import FileErrors, FileStream, TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROOT = Path(os.environ.get("WSGIPIPE_ROOT", Path(__file__).with_name("public"))).resolve()


def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one file from ROOT; errors are mapped by FileErrors."""
    name = environ.get("PATH_INFO", "/").lstrip("/") or "index.html"
    path = safe_join(str(ROOT), name)
    if path is None:
        raise FileNotFoundError(name)
    stream = FileStream(path)
    start_response("200 OK", [("Content-Length", str(stream.size))])
    return stream


logging.getLogger("wsgipipe").setLevel(logging.INFO)
app = TransferLog(FileErrors(files))
