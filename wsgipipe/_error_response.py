"""Short plain-text error responses, and the status an exception deserves.

A leaf above :mod:`wsgipipe._errors`, shared by :class:`~wsgipipe.Static`
(404, 405), :func:`~wsgipipe.file_response` (412, 416) and
:class:`~wsgipipe.FileErrors` (whatever the app raised).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from ._errors import HTTPError

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["error_response", "plain_body", "plain_headers", "status_for", "status_line"]

Headers = list[tuple[str, str]]
_NOT_FOUND = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_LINES = {code: f"{code} {HTTPStatus(code).phrase}" for code in (200, 206, 304, 404, 412, 416)}


def status_line(status: int) -> str:
    """``404 Not Found``: the WSGI status string for ``status``."""
    return _LINES.get(status) or f"{status} {HTTPStatus(status).phrase}"


def plain_body(status: int) -> bytes:
    """The body of a plain error response: its status line."""
    return (status_line(status) + "\n").encode()


def plain_headers(status: int) -> Headers:
    """``Content-Type`` and ``Content-Length`` of :func:`plain_body`."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(plain_body(status)))),
    ]


def status_for(exc: BaseException, *, hide_forbidden: bool = False) -> int:
    """The HTTP status an exception raised before the first byte deserves."""
    if isinstance(exc, HTTPError):
        return exc.status_hint
    if isinstance(exc, _NOT_FOUND):
        return 404
    if isinstance(exc, PermissionError):
        return 404 if hide_forbidden else 403
    return 500


def error_response(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: int,
    *,
    headers: Headers | None = None,
    exc_info: OptExcInfo | None = None,
) -> list[bytes]:
    """A short plain-text error response (``404 Not Found``); empty for HEAD."""
    response_headers = [*plain_headers(status), ("Cache-Control", "no-store"), *(headers or [])]
    start_response(status_line(status), response_headers, exc_info)
    # RFC 9110 §9.3.2: HEAD gets the same headers and no content.
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [plain_body(status)]
