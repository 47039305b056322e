"""Small-file requests per second with the WSGI app called directly.

No server and no socket: this is the per-request cost of each library (path
lookup, stat, headers, open, wrap, close). ``wsgi.file_wrapper`` is
wsgiref's, as a server would offer one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from wsgiref.util import FileWrapper

from werkzeug.test import EnvironBuilder

from . import apps
from .common import LABELS, SMALL, Settings, rounds, say
from .results import Measurement

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

CONTENDERS = ["static", "whitenoise", "shared_data", "send_file", "raw", "file_stream"]
BATCH = 50


class _Start:
    """A start_response that remembers the last status."""

    status = ""

    def __call__(
        self, status: str, headers: object, exc_info: object = None
    ) -> Callable[..., None]:
        self.status = status
        return _write


_start_response = _Start()


def _write(data: bytes) -> None:
    raise AssertionError("no contender uses write()")


def call(app: WSGIApplication, environ: WSGIEnvironment) -> bytes:
    """One request, the way a server does it: iterate, then close."""
    result = app(dict(environ), _start_response)
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def base_environ() -> WSGIEnvironment:
    environ: WSGIEnvironment = EnvironBuilder(path=f"/{SMALL}").get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    return environ


def rate(app: WSGIApplication, environ: WSGIEnvironment, seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(BATCH):
            call(app, environ)
        count += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def _check(name: str, app: WSGIApplication, environ: WSGIEnvironment, expected: bytes) -> None:
    # A contender that answers wrongly must not win on speed.
    body = call(app, environ)
    status = _start_response.status
    if not status.startswith("200") or body != expected:
        raise RuntimeError(f"{name} answered {status} with {len(body)} bytes")


def measure(settings: Settings) -> Measurement:
    m = Measurement(
        "inprocess",
        "Small-file (1 KiB) requests/s, app called directly",
        "req/s",
        higher_is_better=True,
        baseline="whitenoise",
    )
    os.environ["WSGIPIPE_TEST_ROOT"] = settings.data
    environ = base_environ()
    with open(os.path.join(settings.data, SMALL), "rb") as f:
        expected = f.read()
    ready: dict[str, WSGIApplication] = {}
    for name in CONTENDERS:
        try:
            app = apps.build(name)
            _check(name, app, environ, expected)
            rate(app, environ, min(0.2, settings.inprocess_seconds))  # warm up
        except ImportError as exc:
            m.series(name).note = f"not available yet ({exc})"
            continue
        except Exception as exc:
            m.series(name).note = f"failed: {type(exc).__name__}: {exc}"
            continue
        ready[name] = app
        m.series(name)
    for r, order in rounds(list(ready), settings.runs):
        for name in order:
            m.series(name).values.append(rate(ready[name], environ, settings.inprocess_seconds))
        say(f"in-process round {r + 1}/{settings.runs} done")
    for name in ready:
        say(f"  {LABELS[name]}: {m.series(name).median:.0f} req/s")
    return m
