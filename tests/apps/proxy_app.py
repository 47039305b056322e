"""A WSGI app for the upstream source's real-server tests (gunicorn runs it from this folder).

``/up/<path>`` goes to ``WSGIPIPE_UPSTREAM``, ``/second/<path>`` to
``WSGIPIPE_UPSTREAM_2`` (a test's own socket server), ``/third/<path>`` to
``WSGIPIPE_UPSTREAM_3`` (an upstream the test kills); ``/_pool`` reports
the first pool's state: idle slots, connections made, requests sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wsgipipe import Proxy, TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAXSIZE = 4
READ_TIMEOUT = float(os.environ.get("WSGIPIPE_TEST_READ_TIMEOUT", "30"))

first = Proxy(os.environ["WSGIPIPE_UPSTREAM"], maxsize=MAXSIZE, read_timeout=READ_TIMEOUT)
second = Proxy(os.environ["WSGIPIPE_UPSTREAM_2"], maxsize=MAXSIZE, read_timeout=READ_TIMEOUT)
third = Proxy(os.environ["WSGIPIPE_UPSTREAM_3"], maxsize=MAXSIZE, read_timeout=READ_TIMEOUT)


def pool_state(start_response: StartResponse) -> list[bytes]:
    pool = first.pool
    assert pool.pool is not None
    text = f"idle={pool.pool.qsize()} made={pool.num_connections} sent={pool.num_requests}\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
    return [text.encode()]


def dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/_pool":
        return pool_state(start_response)
    for prefix, proxy in (("/up", first), ("/second", second), ("/third", third)):
        if path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix) :]
            return proxy(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not proxied\n"]


app = TransferLog(dispatch)
