"""The answer to a file error raised inside a framework's view.

Flask and Django catch a view's exception themselves and answer 500 before
any WSGI middleware around them sees it, so :class:`wsgipipe.FileErrors`
cannot map it. Their integrations (:mod:`wsgipipe.flask`,
:mod:`wsgipipe.django`) hook into the framework instead and ask this module
for the same status, headers, body, log line and transfer note that
FileErrors would have produced. No framework is imported here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from ._error_response import plain_body, plain_headers, status_for
from ._errors import HTTPError
from ._log_text import request_target
from ._record import current_transfer

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["MAPPED", "Answer", "answer_for"]

#: What the integrations catch: every file error, and wsgipipe's own
#: HTTP errors (416, 412...). Anything else stays the framework's business.
MAPPED: tuple[type[Exception], ...] = (OSError, HTTPError)

log = logging.getLogger("wsgipipe.file_errors")


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def answer_for(
    environ: WSGIEnvironment, exc: BaseException, *, hide_forbidden: bool = False
) -> Answer:
    """404/403/500 (or an HTTPError's own status) for ``exc``, logged like FileErrors."""
    status = status_for(exc, hide_forbidden=hide_forbidden)
    record = current_transfer(environ)
    if record is not None:
        record.error = exc
    target = request_target(environ)  # escaped: no forged log lines
    if status >= 500:
        log.error("error in the view for %s", target, exc_info=exc)
    else:
        log.info("%s for %s: %s", status, target, type(exc).__name__)
    extra = exc.headers if isinstance(exc, HTTPError) else []
    # no-store: a 404 for a file that may appear any moment must not be cached.
    headers = [*plain_headers(status), ("Cache-Control", "no-store"), *extra]
    # RFC 9110 §9.3.2: HEAD gets the same headers and no content.
    body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else plain_body(status)
    return Answer(status, headers, body)
