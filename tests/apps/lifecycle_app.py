"""The app the server-matrix and fault-injection tests run under real servers.

Every response goes through ``TransferLog(FileErrors(...))``, so each one
ends with a transfer line on stderr once the server calls ``close()``:
that line is the proof that ``close()`` happened and says how it ended.

Routes (files come from ``WSGIPIPE_TEST_ROOT``, as for every app in tests/apps):

* ``/file/<name>``: the file as a :class:`~wsgipipe.FileStream`; query
  ``offset``/``length`` make it a 206 slice, ``python=1`` turns off zero-copy.
* ``/fail-before``: the body's first chunk raises ``OSError`` (a 500).
* ``/fail-after/<name>``: one chunk of the file, then the source raises.
* ``/tee-raise/<name>``, ``/tee-slow/<name>``, ``/tee-full/<name>``: the file
  through a :class:`~wsgipipe.Tee` whose sink raises, sleeps 20 ms per chunk,
  or writes to ``/dev/full`` (a real ``ENOSPC`` from the kernel).
* ``/idle/<name>``: the file behind :class:`~wsgipipe.IdleTimeout` (1 s).
* ``/static/<name>``: :class:`~wsgipipe.Static` on the same root.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import IO, TYPE_CHECKING
from urllib.parse import parse_qs

from werkzeug.security import safe_join

from wsgipipe import FileErrors, FileStream, IdleTimeout, Static, Tee, TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")
CHUNK = 64 * 1024


def _stream(environ: WSGIEnvironment, name: str) -> FileStream:
    path = safe_join(ROOT, name)
    if path is None:
        raise FileNotFoundError(name)
    query = parse_qs(environ.get("QUERY_STRING", ""))
    offset = int(query.get("offset", ["0"])[0])
    length = int(query["length"][0]) if "length" in query else None
    zero_copy = query.get("python", ["0"])[0] != "1"
    return FileStream(path, offset=offset, length=length, zero_copy=zero_copy)


def files(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    stream = _stream(environ, environ["PATH_INFO"].split("/", 2)[-1])
    headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(stream.size))]
    if stream.offset or stream.size != stream.file_size:
        end = stream.offset + (stream.size or 0) - 1
        headers.append(("Content-Range", f"bytes {stream.offset}-{end}/{stream.file_size}"))
        start_response("206 Partial Content", headers)
    else:
        start_response("200 OK", headers)
    return stream


class _FailFirst:
    """A source whose very first chunk fails, as a broken disk would."""

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raise OSError(5, "Input/output error (injected)")


def fail_before(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _FailFirst()


def _one_chunk_then_raise(stream: FileStream) -> Iterator[bytes]:
    with closing(stream):
        yield next(stream)
        raise RuntimeError("source failed mid-stream (injected)")


def fail_after(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    stream = _stream(environ, environ["PATH_INFO"].split("/", 2)[-1])
    stream.chunk_size = CHUNK
    start_response("200 OK", [("Content-Length", str(stream.size))])
    return _one_chunk_then_raise(stream)


class RaisingSink:
    def write(self, data: bytes) -> None:
        raise RuntimeError("sink broke (injected)")


class SlowSink:
    def __init__(self) -> None:
        self.seen = 0

    def write(self, data: bytes) -> None:
        time.sleep(0.02)
        self.seen += len(data)


def full_disk(environ: WSGIEnvironment, status: str, headers: object) -> IO[bytes]:
    """A per-response file sink on a full disk: /dev/full fails every write with ENOSPC."""
    return open("/dev/full", "wb")  # Tee closes per-response sinks


ROUTES: dict[str, WSGIApplication] = {
    "file": files,
    "fail-before": fail_before,
    "fail-after": fail_after,
    "tee-raise": Tee(files, RaisingSink()),
    "tee-slow": Tee(files, SlowSink()),
    "tee-full": Tee(files, full_disk),
    "idle": IdleTimeout(files, 1.0),
}


def mounted(app: WSGIApplication, prefix: str) -> WSGIApplication:
    """``app`` under ``/<prefix>``: the prefix moves from PATH_INFO to SCRIPT_NAME."""

    def shifted(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + prefix
        environ["PATH_INFO"] = environ["PATH_INFO"][len(prefix) + 1 :]
        return app(environ, start_response)

    return shifted


ROUTES["static"] = mounted(Static(ROOT), "static")


def router(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    route = environ.get("PATH_INFO", "/").split("/")[1]
    if route not in ROUTES:
        raise FileNotFoundError(route)
    return ROUTES[route](environ, start_response)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(process)d] %(name)s %(message)s"))
    logger = logging.getLogger("wsgipipe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


_log_to_stderr()
app = TransferLog(FileErrors(router))
#: ``lifecycle_app:static``: the Static app on ROOT, for the bad-input tests.
static = TransferLog(Static(ROOT))
