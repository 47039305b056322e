"""Exception types shared by every layer (a leaf: imports nothing from wsgipipe).

Each error that can be answered with an HTTP status carries it as
``status_hint``; the one place that turns errors into responses is
:class:`wsgipipe.FileErrors`.
"""

from __future__ import annotations

import errno

__all__ = [
    "ClientGone",
    "ConfigurationError",
    "FileChanged",
    "HTTPError",
    "RangeNotSatisfiable",
    "SinkError",
    "WsgipipeError",
]


class WsgipipeError(Exception):
    """Base class of every exception wsgipipe raises on purpose."""


class ConfigurationError(WsgipipeError, ValueError):
    """Raised when an app or middleware is built with unusable settings.

    Loud at configuration time so that requests never see the mistake.
    """


class HTTPError(WsgipipeError):
    """An error that has a proper HTTP answer before the first body byte."""

    status_hint: int = 500

    def __init__(
        self,
        message: str = "",
        *,
        status_hint: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint
        #: Headers the error response must carry (``Content-Range`` on a 416).
        self.headers: list[tuple[str, str]] = list(headers or [])


class RangeNotSatisfiable(HTTPError):
    """RFC 9110 §15.5.17: no requested range overlaps the representation."""

    status_hint = 416

    def __init__(self, size: int) -> None:
        # §14.4: a 416 names the current length as "bytes */<size>".
        super().__init__(
            f"no satisfiable range in a {size}-byte representation",
            headers=[("Content-Range", f"bytes */{size}")],
        )
        self.size = size


class FileChanged(WsgipipeError, OSError):
    """The file shrank while it was being sent.

    Content-Length was already announced, so the only honest ending is to let
    the server abort the connection (RFC 9112 §6.3: a short body is an
    incomplete message, never a complete one).
    """

    def __init__(self, path: str, expected: int, got: int) -> None:
        super().__init__(f"{path or 'file'} shrank: sent {got} of {expected} announced bytes")
        self.expected = expected
        self.got = got


class SinkError(WsgipipeError):
    """A tee sink failed and the middleware was told to fail the response."""


class ClientGone(WsgipipeError, ConnectionError):
    """The client disconnected or stopped reading; the transfer is aborted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # Servers treat a reset as routine (gunicorn logs ECONNRESET at debug
        # level instead of a traceback); a client that left is exactly that.
        self.errno = errno.ECONNRESET
