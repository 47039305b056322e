"""The example app: the classic streaming experiments, served for real.

Run it with ``gunicorn examples.app:app`` (``make run``; settings in
``gunicorn.conf.py``). It serves ``WSGIPIPE_ROOT`` (default
``examples/public/``) through wsgipipe's public API only:

* ``GET /<path>``: the file, through FileErrors, Tee and TransferLog;
* ``GET /slow/<path>?delay=5``: every chunk held ``delay`` seconds (the "slow through");
* ``GET /limit/<path>?rate=1k``: at most ``rate`` bytes per second, like
  ``curl --limit-rate`` but done by the server;
* ``GET /zip/<dir>``, ``GET /gzip/<path>``, ``GET /proxy/<path>``: a folder as a
  streamed zip, a file through ``gzip -c``, the path on ``WSGIPIPE_UPSTREAM``
  (examples/sources.py).

Environment: ``WSGIPIPE_TEE`` (comma-separated extra sinks: ``stdout``,
``sha256``, ``dir:PATH``), ``WSGIPIPE_IDLE_TIMEOUT`` (seconds a client may
read nothing before it is cut off; 30 by default, 0 turns it off) and
``WSGIPIPE_MIN_RATE`` (bytes per second a client must take after a 5 s grace
period, ``1k`` or ``240``; 240 by default, 0 turns it off).
``WSGIPIPE_METRICS=1`` serves Prometheus metrics at ``/-/metrics`` and
``WSGIPIPE_LIVE=1`` the live transfers page at ``/-/transfers`` (loopback
clients only unless ``WSGIPIPE_LIVE_TOKEN`` is set; docs/operations.md).
Paths under ``/-/`` are reserved: they never serve a file.
``big.html`` and ``big.bin`` are generated in the root on first use.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from wsgipipe import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MIN_RATE,
    ClientGone,
    ConfigurationError,
    Delay,
    Observed,
    Throttle,
    stack,
    static_app,
)

from .sources import PREFIXES, Sources

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = Path(os.environ.get("WSGIPIPE_ROOT", Path(__file__).with_name("public"))).resolve()

#: Sizes of the generated files: far larger than the loopback socket buffers
#: (a few MiB), so that a client that stops reading really stalls the server.
BIG_HTML_SIZE = 8 * 1024 * 1024
BIG_BIN_SIZE = 64 * 1024 * 1024

#: The slow routes are a demonstration, not a way to hold a thread for ever.
MAX_DELAY = 60.0
#: ...so no demo response lasts longer than this many seconds in all: it is
#: cut (aborted, reason "demo time limit"). Without it, delay=60 on big.bin
#: (1,024 chunks) would hold a thread for 17 hours, rate=1 for two years.
#: WSGIPIPE_DEMO_LIMIT overrides it.
DEMO_LIMIT = 120.0


def make_big_files(root: Path = ROOT) -> None:
    """Create big.html and big.bin once; atomic, so concurrent workers agree."""
    line = b"<p>" + b"wsgipipe streams this line again and again. " * 2 + b"</p>\n"
    html = b"<!doctype html>\n<title>big</title>\n" + line * (BIG_HTML_SIZE // len(line))
    _write_once(root / "big.html", lambda: html)
    _write_once(root / "big.bin", lambda: os.urandom(BIG_BIN_SIZE))


def _write_once(path: Path, content: Callable[[], bytes]) -> None:
    if path.exists() or not os.access(path.parent, os.W_OK):
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(content())
    os.replace(temp, path)


def bad_request(start_response: StartResponse, message: str) -> list[bytes]:
    body = f"400 Bad Request: {message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("400 Bad Request", headers)
    return [body]


def query(environ: WSGIEnvironment, name: str, default: str) -> str:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    return values[-1] if values else default


class Experiments:
    """Route ``/slow/`` and ``/limit/`` to Delay and Throttle around the file app."""

    def __init__(self, root: Path, *, time_limit: float = DEMO_LIMIT) -> None:
        self.files = static_app(root)
        self.sources = Sources(root)
        self.time_limit = time_limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path.startswith(PREFIXES):
            return self.sources(environ, start_response)
        for prefix, route in (("/slow/", self.slow), ("/limit/", self.limit)):
            if path.startswith(prefix):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix[:-1]
                environ["PATH_INFO"] = path[len(prefix) - 1 :]
                try:
                    app = route(environ)
                except ValueError as exc:  # ConfigurationError is a ValueError
                    return bad_request(start_response, str(exc))
                return time_limited(app(environ, start_response), self.time_limit)
        return self.files(environ, start_response)

    def slow(self, environ: WSGIEnvironment) -> WSGIApplication:
        try:
            delay = float(query(environ, "delay", "5"))
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= MAX_DELAY:
            raise ConfigurationError(f"delay must be between 0 and {MAX_DELAY:g} seconds")
        return Delay(self.files, delay)

    def limit(self, environ: WSGIEnvironment) -> WSGIApplication:
        return Throttle(self.files, query(environ, "rate", "1k"))


def time_limited(body: Iterable[bytes], seconds: float) -> Observed:
    """``body``, cut once ``seconds`` have passed since the response started.

    The cut is an abort with a reason, not a short body that looks whole:
    ClientGone makes the server drop the connection (Content-Length was sent).
    """
    deadline = time.monotonic() + seconds

    def check(chunk: bytes) -> bytes:
        if time.monotonic() > deadline:
            raise ClientGone(f"demo time limit {seconds:g}s")
        return chunk

    return Observed(body, transform=check)


def build(root: Path = ROOT) -> WSGIApplication:
    """The whole example app, configured from the environment."""
    idle = float(os.environ.get("WSGIPIPE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT))
    min_rate = os.environ.get("WSGIPIPE_MIN_RATE", f"{DEFAULT_MIN_RATE:g}")
    make_big_files(root)
    tee = os.environ.get("WSGIPIPE_TEE", "")
    return stack(
        Experiments(root, time_limit=float(os.environ.get("WSGIPIPE_DEMO_LIMIT", DEMO_LIMIT))),
        tee=tee,
        idle_timeout=idle,
        min_rate=min_rate,
        metrics=os.environ.get("WSGIPIPE_METRICS") == "1",
        live=os.environ.get("WSGIPIPE_LIVE") == "1",
        live_token=os.environ.get("WSGIPIPE_LIVE_TOKEN") or None,
    )


logging.getLogger("wsgipipe").setLevel(logging.INFO)
app = build()
