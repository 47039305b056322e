"""UpstreamStream: an upstream HTTP response as a body, on urllib3's connection pool.

The upstream request is made when the body's first chunk is asked for (so
its failures become a 502, or a 504 for a timeout, before the first byte).
``close()`` hands the connection back on every ending: to the pool for
reuse when the body was read to its end, closed first otherwise, so a client
that leaves can never hold a pool slot or leave a half-read socket in it.

A client that leaves while the upstream is silent is seen by the
:mod:`wsgipipe._client_watch` thread, which shuts the upstream socket down:
the blocked read returns at once and the transfer is recorded as
``aborted``. urllib3 is imported only when an upstream is used.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from contextvars import ContextVar
from http import HTTPStatus
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from ._body import Observed, close_all
from ._client_watch import Watch, watch_client
from ._errors import ClientGone
from ._sources import Reader, SourceError
from ._stream import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from urllib3 import BaseHTTPResponse
    from urllib3.connectionpool import HTTPConnectionPool

__all__ = [
    "HOP_BY_HOP",
    "UpstreamError",
    "UpstreamStream",
    "UpstreamTimeout",
    "end_to_end",
    "watched_pool",
]

Headers = list[tuple[str, str]]

#: RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus
#: the proxy authentication pair (§11.7.1, §11.7.2), which is for one hop too.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

#: The watch of the request being sent in this thread, for the connection hook.
_current: ContextVar[Watch | None] = ContextVar("wsgipipe_upstream_watch", default=None)


class UpstreamError(SourceError):
    """The upstream failed: 502 before the first byte, an aborted response after."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer in time: 504 before the first byte."""

    status_hint = 504


def end_to_end(headers: Iterable[tuple[str, str]]) -> Headers:
    """``headers`` without hop-by-hop fields, nor those the Connection field names (§7.6.1)."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in pairs if k.lower() not in HOP_BY_HOP and k.lower() not in named]


class UpstreamStream(Observed):
    """The body of ``pool.urlopen(method, url, **request)`` streamed through.

    ``status`` and ``headers`` (end-to-end only) are known once the first
    chunk was pulled (:func:`~wsgipipe._sources.start_body` does that).
    ``environ`` makes the wait for the upstream disconnect-aware.
    """

    def __init__(
        self,
        pool: HTTPConnectionPool,
        method: str,
        url: str,
        *,
        environ: WSGIEnvironment | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **request: Any,
    ) -> None:
        self.upstream = _Upstream(pool, method, url, request, chunk_size, environ)
        super().__init__(self.upstream)

    def head(self) -> tuple[str, Headers] | None:
        """``("200 OK", headers)`` of the upstream response, once it arrived."""
        response = self.upstream.response
        if response is None:
            return None
        # PEP 3333 wants "code reason"; an upstream may send no reason phrase.
        reason = response.reason or _phrase(response.status)
        return f"{response.status} {reason}", end_to_end(response.headers.iteritems())


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Upstream(Reader):
    """The reader behind an UpstreamStream: request, read, release."""

    def __init__(
        self,
        pool: HTTPConnectionPool,
        method: str,
        url: str,
        request: dict[str, Any],
        chunk_size: int,
        environ: WSGIEnvironment | None,
    ) -> None:
        self.pool = pool
        self.method = method
        self.url = url
        self.request = request
        self.chunk_size = chunk_size
        self.response: BaseHTTPResponse | None = None
        self.complete = False
        self.watch = watch_client(environ) if environ is not None else None

    def _next(self) -> bytes:
        if self.watch is not None and self.watch.cut:
            raise ClientGone("client disconnected")
        response = self.response or self._open()
        data = response.read1(self.chunk_size, decode_content=False)
        if data:
            return data
        if self.watch is not None and self.watch.cut:
            # A socket shut down under a close-delimited body reads as its end.
            raise ClientGone("client disconnected")
        self.complete = True
        raise StopIteration

    def _open(self) -> BaseHTTPResponse:
        token = _current.set(self.watch)
        try:
            self.response = self.pool.urlopen(
                self.method,
                self.url,
                redirect=False,
                retries=False,  # a proxy answers for the upstream; it does not retry for it
                preload_content=False,
                decode_content=False,
                release_conn=False,
                **self.request,
            )
        finally:
            _current.reset(token)
        if self.watch is not None:
            self.watch.attach(_socket_of(self.response))
        return self.response

    def _explained(self, exc: BaseException) -> BaseException:
        """What ``exc`` means here: the client left, or the upstream failed (and how)."""
        if isinstance(exc, (ClientGone, UpstreamError)):
            return exc
        if self.watch is not None and self.watch.cut:
            return ClientGone("client disconnected")
        from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

        if isinstance(exc, TimeoutError) and not isinstance(exc, NewConnectionError):
            return UpstreamTimeout(f"upstream timed out: {exc}")
        if isinstance(exc, (HTTPError, HTTPException, OSError)):
            return UpstreamError(f"upstream failed: {type(exc).__name__}: {exc}")
        return exc

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end."""
        if self.watch is not None:
            self.watch.stop()  # no cut can reach this socket once it is back in the pool
        response = self.response
        if response is None:
            return
        # Half-read: the socket must not be reused; the pool slot is freed
        # whatever close() does.
        steps = [] if self.complete else [response.close]
        close_all(*steps, response.release_conn)


def _socket_of(response: BaseHTTPResponse) -> socket.socket | None:
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


_watched: dict[type, type] = {}


def watched_pool(pool: HTTPConnectionPool) -> HTTPConnectionPool:
    """Let the client watch reach ``pool``'s sockets while response headers are awaited.

    Swaps the pool's ``ConnectionCls`` for a subclass whose ``getresponse()``
    hands its socket to the current request's watch; returns ``pool``.
    """
    base = pool.ConnectionCls
    if base not in _watched.values():
        pool.ConnectionCls = _watched.get(base) or _watched.setdefault(base, _subclass(base))
    return pool


def _subclass(base: type[Any]) -> type[Any]:
    class Watched(base):  # type: ignore[misc]
        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            watch = _current.get()
            if watch is not None:
                watch.attach(getattr(self, "sock", None))
            return super().getresponse(*args, **kwargs)

    Watched.__name__ = Watched.__qualname__ = f"Watched{base.__name__}"
    return Watched
