"""Proxy: a WSGI app that forwards each request to one upstream and streams the answer back.

Mount it under a prefix with any dispatcher: the request's ``PATH_INFO`` is
appended to the upstream URL's path. The body is an
:class:`~wsgipipe._upstream.UpstreamStream`, so the upstream connection is
released on every ending and a client that leaves stops the upstream read.
``Range``, ``If-None-Match`` and the other request fields pass through
untouched, and the upstream's 206, 304 or 416 comes back as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from ._errors import ConfigurationError
from ._sources import start_body
from ._upstream import UpstreamStream, end_to_end, watched_pool

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import IO

    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from urllib3.connectionpool import HTTPConnectionPool

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_READ_TIMEOUT", "Proxy"]

#: Seconds to open a connection to the upstream (then 504).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds the upstream may stay silent, before or during its body (then 504 or abort).
DEFAULT_READ_TIMEOUT = 30.0

Headers = list[tuple[str, str]]
#: Characters left as they are when PATH_INFO is quoted again (RFC 3986 §3.3 pchar).
_PATH_SAFE = "/:@!$&'()*+,;="


class Proxy:
    """Forward every request to ``upstream`` (``http://host:port/base``) on urllib3's pool.

    Needs the ``proxy`` extra (urllib3). ``maxsize`` connections are kept
    for reuse; more are opened when needed and closed after use. Raises
    :class:`~wsgipipe.ConfigurationError` at once for a URL it cannot use.
    ``pool`` replaces the pool this app would make (its connections get
    the disconnect watch); the app's own pool is ``self.pool``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        maxsize: int = 10,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        import urllib3  # the optional "proxy" extra: imported only when a proxy is made

        try:
            url = urllib3.util.parse_url(upstream)
        except urllib3.exceptions.LocationParseError as exc:
            raise ConfigurationError(f"not an upstream URL: {upstream!r}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"upstream must be an http(s)://host URL, not {upstream!r}")
        self.upstream = upstream
        self.base = (url.path or "").rstrip("/")
        timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        made = pool or urllib3.connection_from_url(
            upstream, maxsize=maxsize, block=False, timeout=timeout, retries=False
        )
        self.pool = watched_pool(made)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = UpstreamStream(
            self.pool,
            environ.get("REQUEST_METHOD", "GET"),
            self.target(environ),
            environ=environ,
            headers=request_headers(environ),
            body=_request_body(environ),
        )
        return start_body(environ, start_response, body, body.head)

    def target(self, environ: WSGIEnvironment) -> str:
        """The upstream path and query for this request."""
        raw = environ.get("PATH_INFO", "").encode("latin-1")
        path = self.base + (quote(raw, safe=_PATH_SAFE) or "/")
        query = environ.get("QUERY_STRING", "")
        return f"{path}?{query}" if query else path


def request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    """The client's end-to-end request fields, plus ``X-Forwarded-*``.

    ``Host`` is the upstream's (urllib3 sets it); the client's goes in
    ``X-Forwarded-Host``.
    """
    found: Headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            found.append((key[5:].replace("_", "-").title(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            found.append((key.replace("_", "-").title(), value))
    headers = {k: v for k, v in end_to_end(found) if k != "Host"}
    client = environ.get("REMOTE_ADDR")
    if client:
        earlier = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{earlier}, {client}" if earlier else client
    if environ.get("HTTP_HOST"):
        headers["X-Forwarded-Host"] = environ["HTTP_HOST"]
    headers["X-Forwarded-Proto"] = environ.get("wsgi.url_scheme", "http")
    return headers


def _request_body(environ: WSGIEnvironment) -> IO[bytes] | None:
    # No Content-Length with a chunked upload (RFC 9112 section 6.1): the
    # server de-chunks wsgi.input up to its end, and urllib3 sends a body of
    # unknown length chunked again. Dropping it would lose the upload.
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    # With Content-Length set, http.client sends exactly that many bytes from it.
    stream: IO[bytes] | None = environ["wsgi.input"] if chunked or length > 0 else None
    return stream
