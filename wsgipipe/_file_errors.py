"""FileErrors: file errors before the first byte become clean HTTP answers.

Before any body byte is sent the status can still change, so a missing file
becomes a 404, an unreadable one a 403 (or 404, to hide that it exists) and
anything else a 500, with a short plain body that shows neither a path nor a
traceback; the traceback goes to the server log. After the first byte the
status is gone, so the error is logged and re-raised for the server to abort
the connection: a truncated body must never look complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._body import Body, close_all
from ._error_response import error_response, status_for
from ._errors import ClientGone, HTTPError, WsgipipeError
from ._h2 import gone
from ._handoff import observe
from ._log_text import request_target
from ._record import current_transfer

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["FileErrors", "error_response", "status_for"]

log = logging.getLogger("wsgipipe.file_errors")

Headers = list[tuple[str, str]]


class _Deferred:
    """Holds the app's start_response until its body is known to start."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.args: tuple[str, Headers, OptExcInfo | None] | None = None
        self._write: Callable[[bytes], object] | None = None

    @property
    def forwarded(self) -> bool:
        return self._write is not None

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if self.forwarded:
            return self._start_response(status, headers, exc_info)
        self.args = (status, headers, exc_info)
        return self._legacy_write

    def forward(self) -> None:
        if not self.forwarded and self.args is not None:
            self._write = self._start_response(*self.args)

    def _legacy_write(self, data: bytes) -> object:
        # PEP 3333's write() sends at once, so the headers must go first.
        self.forward()
        assert self._write is not None
        return self._write(data)


class FileErrors:
    """Middleware mapping errors raised before the first body byte to responses.

    Covers the app call and the first chunk (a lazily opened file): a
    :class:`FileStream` is opened eagerly, any other body has its first chunk
    pulled. ``hide_forbidden=True`` answers 404 instead of 403 so that a
    client cannot learn which files exist. :class:`~wsgipipe.HTTPError`
    subclasses answer with their own ``status_hint`` and headers.
    """

    def __init__(self, app: WSGIApplication, *, hide_forbidden: bool = False) -> None:
        self.app = app
        self.hide_forbidden = hide_forbidden

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        deferred = _Deferred(start_response)
        result: Iterable[bytes] | None = None
        try:
            result = self.app(environ, deferred.start_response)
            body = self._start(environ, result)
        except ClientGone as exc:
            # Nobody left to answer: aborted, never a 500 (aborts are not errors).
            if result is not None:
                _close_quietly(result)
            deferred.forward()
            return gone(environ, exc)
        except Exception as exc:
            if deferred.forwarded:
                raise  # the app already wrote through write(): too late to answer
            if result is not None:
                _close_quietly(result)
            return self._answer(environ, start_response, exc)
        deferred.forward()
        return body

    def _start(self, environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
        """Make the body's first failure happen now; return what the server gets."""
        # A file is opened, not read, so the zero-copy path stays open.
        body, server = observe(environ, result, prime=True)
        body.on_close(_log_late_failure)
        return server

    def _answer(
        self, environ: WSGIEnvironment, start_response: StartResponse, exc: Exception
    ) -> list[bytes]:
        status = self.status_for(exc)
        record = current_transfer(environ)
        if record is not None:
            record.error = exc
        if status >= 500:
            log.error("error before the first byte of %s", request_target(environ), exc_info=exc)
        else:
            log.info("%s for %s: %s", status, request_target(environ), type(exc).__name__)
        headers = exc.headers if isinstance(exc, HTTPError) else None
        # The server's start_response has not been called yet (the app's call
        # was deferred), so there is nothing for exc_info to replace; and
        # uWSGI's start_response fails with SystemError when given one here.
        return error_response(environ, start_response, status, headers=headers)

    def status_for(self, exc: BaseException) -> int:
        return status_for(exc, hide_forbidden=self.hide_forbidden)


def _log_late_failure(body: Body) -> None:
    if body.outcome != "failed" or body.error is None:
        return
    if isinstance(body.error, WsgipipeError):
        # wsgipipe's own errors (a file that changed mid-transfer) say what
        # happened in their message; a traceback would only add noise.
        log.warning("transfer failed after the first byte; the server aborts it: %s", body.error)
    else:
        log.error("transfer failed after the first byte; the server aborts it", exc_info=body.error)


def _close_quietly(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is None:
        return
    try:
        close_all(close)
    except Exception:
        log.exception("closing the body of a failed response raised")
