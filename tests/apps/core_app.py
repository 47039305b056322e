"""A WSGI app for the core's real-server tests (run by gunicorn from this folder).

Routes: ``/file/<name>`` serves a file from ``WSGIPIPE_TEST_ROOT`` (zero-copy
when possible); ``/tee/<name>`` the same through a Tee with a sha256 sink;
``/bytesio``, ``/pipe`` and ``/proc`` serve sources that cannot be sent with
sendfile.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from wsgipipe import FileErrors, FileStream, Tee, TransferLog, sinks

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")


def _pipe_source() -> io.BufferedReader:
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(b"p" * 300_000)

    threading.Thread(target=feed, daemon=True).start()
    return os.fdopen(r, "rb")


def _source(path: str) -> FileStream:
    if path == "/bytesio":
        return FileStream(io.BytesIO(b"b" * 300_000))
    if path == "/pipe":
        return FileStream(_pipe_source())
    if path == "/proc":
        return FileStream("/proc/self/status")
    name = path.split("/", 2)[-1]
    full = safe_join(ROOT, name)
    if full is None:
        raise FileNotFoundError(name)
    return FileStream(full)


def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    stream = _source(environ["PATH_INFO"])
    headers = [("Content-Type", "application/octet-stream")]
    if stream.size is not None:
        headers.append(("Content-Length", str(stream.size)))
    start_response("200 OK", headers)
    return stream


teed = Tee(files, sinks.Digest("sha256"))


def dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    tee = environ.get("PATH_INFO", "").startswith("/tee/")
    return (teed if tee else files)(environ, start_response)


app = TransferLog(FileErrors(dispatch))
