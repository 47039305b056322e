"""The two layers every observability integration shares.

* :class:`Watch` tells observers (Prometheus metrics, the live transfers page)
  when a transfer starts, what its body is, and when it really ended: at the
  server's ``close()``, with the :class:`~wsgipipe.Transfer` record that
  :class:`~wsgipipe.TransferLog` settled.
* :class:`Reserved` answers every path under the reserved prefix ``/-/``
  itself (metrics, the live page, or 404) so that no file can ever be served
  there, whatever the folder holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from ._body import Body, Observed
from ._handoff import tracked
from ._record import Transfer, current_transfer
from ._transfer_log import TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["PREFIX", "Observer", "Reserved", "Route", "Watch", "not_found", "plain"]

#: Paths under this prefix belong to wsgipipe, never to the files being served.
PREFIX = "/-/"


class Observer(Protocol):
    """What :class:`Watch` calls; every method runs in the request's thread."""

    def started(self, environ: WSGIEnvironment) -> None:
        """The request arrived (before the app runs)."""

    def streaming(self, environ: WSGIEnvironment, record: Transfer, body: Body) -> None:
        """The app returned ``body``; the server is about to send it."""

    def ended(self, environ: WSGIEnvironment, record: Transfer) -> None:
        """The transfer ended (``close()`` or an exception); ``record`` is settled."""


class Watch:
    """Middleware: report each transfer's start, body and settled end to ``observers``.

    ``app`` is wrapped in a :class:`~wsgipipe.TransferLog` unless it already
    is one, because the end a transfer is reported with is the record
    TransferLog fills in at ``close()``. Observers only observe: the body the
    server gets is the one the app returned (zero-copy survives).
    """

    def __init__(self, app: WSGIApplication, *observers: Observer) -> None:
        self.app = app if isinstance(app, TransferLog) else TransferLog(app)
        self.observers = observers

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        for observer in self.observers:
            observer.started(environ)
        try:
            result = self.app(environ, start_response)
        except BaseException as exc:
            # TransferLog settled the record as failed; every start gets an end.
            record = current_transfer(environ) or _record_for(environ, exc)
            self._ended(environ, record)
            raise
        # With TransferLog inside there is always a record and a tracked body.
        record = current_transfer(environ) or _record_for(environ, None)
        body = tracked(result)
        if body is None:
            body = result = Observed(result)
        for observer in self.observers:
            observer.streaming(environ, record, body)
        # Registered after TransferLog's own callback, so the record is settled.
        body.on_close(lambda _body: self._ended(environ, record))
        return result

    def _ended(self, environ: WSGIEnvironment, record: Transfer) -> None:
        for observer in self.observers:
            observer.ended(environ, record)


def _record_for(environ: WSGIEnvironment, exc: BaseException | None) -> Transfer:
    method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
    return Transfer(method, path, outcome="failed" if exc else None, error=exc)


Route = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]


class Reserved:
    """Middleware: serve ``routes`` under ``/-/`` and 404 the rest of that prefix.

    ``routes`` maps a path such as ``"/-/metrics"`` to a WSGI app. Nothing
    under ``/-/`` reaches ``app``, so a file or folder named ``-`` at the top
    of the served folder is never served, and turning a route on never
    changes what an existing URL returns.
    """

    def __init__(self, app: WSGIApplication, routes: Mapping[str, Route] | None = None) -> None:
        self.inner = app
        self.routes = dict(routes or {})
        for path in self.routes:
            if not path.startswith(PREFIX):
                raise ValueError(f"reserved routes live under {PREFIX}, not {path!r}")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not (path.startswith(PREFIX) or path == PREFIX[:-1]):
            return self.inner(environ, start_response)
        route = self.routes.get(path)
        if route is None:
            return not_found(start_response)
        return route(environ, start_response)

    def __getattr__(self, name: str) -> object:
        # Transparent for code that inspects the stack (``stack(app).app``).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    """A short text/plain answer (``status`` like ``"404 Not Found"``)."""
    body = f"{status}: {text}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    start_response(status, headers)
    return [body]


def not_found(start_response: StartResponse) -> list[bytes]:
    return plain(start_response, "404 Not Found", "nothing is served here")
