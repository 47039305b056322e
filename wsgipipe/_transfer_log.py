"""TransferLog: one record per response, written when the server calls ``close()``.

This is the WSGI counterpart of Node's ``finish`` versus ``close`` events: the
app returning is not the end of a response, the server's ``close()`` is. Only
then do we know how many bytes went out and whether the client got them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._body import Body
from ._handoff import observe
from ._log_text import log_text
from ._record import ENVIRON_KEY, Transfer

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TransferLog"]

Headers = list[tuple[str, str]]

#: RFC 9110 §6.4.1: these never carry content, so an empty body is complete.
_NO_CONTENT = {204, 304}


class TransferLog:
    """Middleware recording each response's outcome at ``close()``.

    Logs one line per response on ``logger`` (the ``wsgipipe`` logger by
    default), such as ``GET /big.bin 200 aborted 65536/1073741824 B 1.20s``,
    and passes the :class:`~wsgipipe.record.Transfer` to ``on_done``. Inner
    layers find the record in ``environ["wsgipipe.transfer"]``. A body that is
    a wsgipipe stream is observed in place, so zero-copy survives.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        logger: logging.Logger | None = None,
        on_done: Callable[[Transfer], object] | None = None,
    ) -> None:
        self.app = app
        self.logger = logger or logging.getLogger("wsgipipe.transfer_log")
        self.on_done = on_done

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        record = Transfer(log_text(environ.get("REQUEST_METHOD", "GET")), _path(environ))
        environ[ENVIRON_KEY] = record

        def log_start_response(
            status: str, headers: Headers, exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            record.status = int(status[:3])
            record.length = _content_length(headers)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, log_start_response)
        except BaseException as exc:
            record.outcome, record.error = "failed", exc
            self._done(record)
            raise
        body, server = observe(environ, result)
        body.on_close(lambda b: self._done(_settle(record, b)))
        return server

    def _done(self, record: Transfer) -> None:
        record.duration = time.monotonic() - record.started
        level = logging.WARNING if record.outcome == "failed" else logging.INFO
        self.logger.log(level, "%s", record.line(), extra={"transfer": record})
        if self.on_done is not None:
            self.on_done(record)


def _settle(record: Transfer, body: Body) -> Transfer:
    record.bytes_sent = body.bytes_sent
    record.outcome = body.outcome
    record.error = record.error or body.error
    record.reason = record.reason or body.reason
    if body.via is not None:
        record.notes.setdefault("via", body.via)
    if record.method == "HEAD":
        record.bytes_sent = 0  # RFC 9110 §9.3.2: the server drops what the app made
    if record.outcome == "aborted" and _no_body_expected(record):
        record.outcome = "finished"  # HEAD, 204 and 304 end with no bytes by design
    return record


def _no_body_expected(record: Transfer) -> bool:
    return record.method == "HEAD" or record.status in _NO_CONTENT or record.length == 0


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _path(environ: WSGIEnvironment) -> str:
    # A hostile path must not forge a log line (one escaping rule: _log_text).
    return log_text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
