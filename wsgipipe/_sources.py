"""What the process, upstream and zip sources share.

Each source is an :class:`~wsgipipe.Observed` around a reader object whose
``close()`` releases what it holds (a child process, a pooled connection,
member files). :func:`start_body` pulls the first chunk *before* the status
goes out, so a failure there becomes a clean HTTP error (the details in the
log, never in the body), while a failure after it reaches the server, which
aborts the connection: a truncated body must never look complete
(RFC 9112 §6.3).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._body import Observed
from ._error_response import error_response, status_for, status_line
from ._errors import ClientGone, HTTPError
from ._log_text import log_text, request_target
from ._record import current_transfer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Reader", "SourceError", "start_body"]

log = logging.getLogger("wsgipipe.sources")

Headers = list[tuple[str, str]]
Head = tuple[int | str, Headers]


class SourceError(HTTPError):
    """A source failed: ``status_hint`` says how to answer before the first byte (502, 504)."""

    status_hint = 502


class Reader:
    """The iterator behind a source body; a failure, once raised, is raised on every call.

    Subclasses give ``_next()`` (a chunk, or StopIteration at the end) and
    ``close()``; ``_explained(exc)`` may turn a low-level error into the one
    to report (a :class:`SourceError`, or :class:`ClientGone`).
    """

    _failure: BaseException | None = None

    def __iter__(self) -> Reader:
        return self

    def __next__(self) -> bytes:
        if self._failure is not None:
            raise self._failure  # primed and failed: the server's next() sees it again
        try:
            return self._next()
        except StopIteration:
            raise
        except BaseException as exc:
            self._failure = self._explained(exc)
            if self._failure is exc:
                raise
            raise self._failure from exc

    def _next(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _explained(self, exc: BaseException) -> BaseException:
        return exc

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def start_body(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    body: Observed,
    head: Head | Callable[[], Head | None],
) -> Iterable[bytes]:
    """Prime ``body``, then start the response with it, or answer its early failure.

    ``head`` is ``(status, headers)``, or a function giving it once the
    first chunk is known (an upstream's own status), None if there is none.

    A client that left while the first chunk was awaited is not an error:
    the body is handed to the server anyway and raises
    :class:`~wsgipipe.ClientGone` again at the first ``next()``, so the
    transfer is recorded as ``aborted`` and closed like any other.
    """
    try:
        body.prime()
    except ClientGone:
        pass
    except Exception as exc:
        return _early_failure(environ, start_response, body, exc)
    found = head() if callable(head) else head
    if found is not None:
        status, headers = found
        start_response(status_line(status) if isinstance(status, int) else status, headers)
    return body


def _early_failure(
    environ: WSGIEnvironment, start_response: StartResponse, body: Observed, exc: Exception
) -> list[bytes]:
    try:
        body.close()
    except Exception:
        log.exception("closing a source that failed before its first byte raised")
    record = current_transfer(environ)
    if record is not None:
        record.error = exc
    code = status_for(exc)
    # Both escaped: a child's stderr or an upstream's message can echo
    # request input, and must not write log lines of its own.
    target, message = request_target(environ), log_text(str(exc), spaces=True)
    log.error("%s before the first byte of %s: %s", code, target, message)
    return error_response(environ, start_response, code)
