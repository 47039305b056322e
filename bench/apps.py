"""The contenders: one WSGI app per way of sending a file.

gunicorn loads them as ``bench.apps:build('name')``; the in-process rounds
call :func:`build` directly. Files are served from ``$WSGIPIPE_TEST_ROOT``. Each app
answers ``GET /<name>`` with the file and is as plain as its library allows,
so that a difference in speed is the library's, not the harness's.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.util import FileWrapper

from werkzeug.security import safe_join

from wsgipipe import Delay, FileStream, IdleTimeout, Tee, TransferLog
from wsgipipe.sinks import Digest

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CHUNK = 64 * 1024
#: A slow source ("slow through"): the pause after every chunk.
SLOW_DELAY = 5.0
#: Per-write pause of the slow tee sink (16384 writes for 1 GiB: about 3 s).
SLOW_SINK_PAUSE = 0.0002
#: Idle timeout given to wsgipipe in the stalled-reader row.
IDLE_TIMEOUT = 1.0


def data_dir() -> str:
    default = os.path.join(os.path.dirname(__file__), "out", "data")
    return os.environ.get("WSGIPIPE_TEST_ROOT", default)


def _path(environ: WSGIEnvironment) -> str:
    path = safe_join(data_dir(), environ.get("PATH_INFO", "/").lstrip("/"))
    if path is None:
        raise FileNotFoundError(environ.get("PATH_INFO"))
    return path


def not_found(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


# -- the plain ways -----------------------------------------------------------
def raw(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The baseline: the server's own ``wsgi.file_wrapper`` around ``open()``."""
    f = open(_path(environ), "rb")  # noqa: SIM115 - the server's wrapper closes it
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
    # Servers without one (the test client) get wsgiref's, as WhiteNoise does.
    wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
    result: Iterable[bytes] = wrapper(f, CHUNK)
    return result


def generator(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The naive way: a generator reading 64 KiB at a time."""
    path = _path(environ)
    size = os.stat(path).st_size
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
    return _chunks(path, 0.0)


def _chunks(path: str, delay: float) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
            if delay:
                time.sleep(delay)


def slow_generator(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The naive slow source: a generator that pauses after every chunk."""
    path = _path(environ)
    size = os.stat(path).st_size
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
    return _chunks(path, SLOW_DELAY)


def send_file(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    from werkzeug.utils import send_file as werkzeug_send_file

    response = werkzeug_send_file(_path(environ), environ)
    return response(environ, start_response)


# -- wsgipipe -----------------------------------------------------------------
def file_stream(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A bare FileStream; ``for_server`` lets gunicorn use sendfile."""
    stream = FileStream(_path(environ))
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(stream.size))]
    start_response("200 OK", headers)
    return stream.for_server(environ)


def stream_only(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    # The shape the example app has: return the stream and let the outermost
    # wsgipipe layer decide whether the server can send it zero-copy.
    stream = FileStream(_path(environ))
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(stream.size))]
    start_response("200 OK", headers)
    return stream


class Discard:
    """A tee sink that drops every chunk: measures the tee, not the sink."""

    def write(self, data: bytes) -> None:
        return None


class SlowSink:
    """A tee sink that is slower than the network (a busy log, a slow disk)."""

    def write(self, data: bytes) -> None:
        time.sleep(SLOW_SINK_PAUSE)


class BufferingLog:
    """The naive body logger: keeps the whole body to log it at the end, as some do."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.sink = Discard()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._logged(self.app(environ, start_response))

    def _logged(self, result: Iterable[bytes]) -> Iterator[bytes]:
        body = bytearray()
        try:
            for chunk in result:
                body += chunk
                yield chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self.sink.write(bytes(body))


# -- the builders -------------------------------------------------------------
def _whitenoise() -> WSGIApplication:
    from whitenoise import WhiteNoise  # type: ignore[import-untyped,unused-ignore]

    app: WSGIApplication = WhiteNoise(not_found, root=data_dir())
    return app


def _shared_data() -> WSGIApplication:
    from werkzeug.middleware.shared_data import SharedDataMiddleware

    return SharedDataMiddleware(not_found, {"/": data_dir()})


def _static() -> WSGIApplication:
    from wsgipipe import Static  # type: ignore[attr-defined,unused-ignore]

    app: WSGIApplication = Static(data_dir())
    return app


def _logged(app: WSGIApplication) -> WSGIApplication:
    return TransferLog(app)


BUILDERS: dict[str, Callable[[], WSGIApplication]] = {
    "raw": lambda: raw,
    "generator": lambda: generator,
    "send_file": lambda: send_file,
    "whitenoise": _whitenoise,
    "shared_data": _shared_data,
    "static": _static,
    "file_stream": lambda: file_stream,
    "file_stream_logged": lambda: _logged(stream_only),
    "tee_discard": lambda: _logged(Tee(stream_only, Discard())),
    "tee_sha256": lambda: _logged(Tee(stream_only, Digest("sha256"))),
    "tee_slow": lambda: Tee(stream_only, SlowSink()),
    "buffer_log": lambda: BufferingLog(stream_only),
    "slow_generator": lambda: slow_generator,
    # wsgipipe's Delay notices the hang-up during its pause; IdleTimeout cuts a
    # reader that stopped reading, and keeps zero-copy.
    "slow_wsgipipe": lambda: TransferLog(Delay(stream_only, SLOW_DELAY)),
    "idle_wsgipipe": lambda: TransferLog(IdleTimeout(stream_only, IDLE_TIMEOUT)),
}


def build(name: str) -> WSGIApplication:
    """The app called ``name``; gunicorn calls this as ``bench.apps:build('name')``."""
    _show_transfer_lines()
    return BUILDERS[name]()


def available(name: str) -> str | None:
    """None if ``name`` can be built here, else why not (e.g. "not available yet")."""
    try:
        build(name)
    except ImportError as exc:
        if (exc.name or "wsgipipe").startswith("wsgipipe"):
            return f"not available yet ({exc})"  # a wsgipipe feature still being built
        return f"skipped: {exc.name} is not installed (pip install -e '.[bench]')"
    except Exception as exc:  # a contender that cannot start is reported, not fatal
        return f"cannot start: {type(exc).__name__}: {exc}"
    return None


def _show_transfer_lines() -> None:
    # Under gunicorn (BENCH_TRANSFER_LOG=1) the transfer lines go to stderr,
    # where the harness reads ``via=sendfile`` from the server log.
    if not os.environ.get("BENCH_TRANSFER_LOG"):
        return
    logger = logging.getLogger("wsgipipe")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.setLevel(logging.INFO)
