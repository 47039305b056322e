"""The live transfers page (``/-/transfers``) and its JSON (``/-/transfers.json``).

Plain HTML, one script and one stylesheet shipped inside the package: no
build step, no CDN. Everything under it is protected: by default only a
loopback client (``REMOTE_ADDR``) gets it; with a token, only a client that
presents it (``Authorization: Bearer``, ``?token=`` once, or the cookie that
sets), compared in constant time. Behind a reverse proxy on the same host
every client looks like loopback: use a token there.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ._errors import ConfigurationError
from ._live import Live
from ._live_routes import PREFIX, Observer, Reserved, Route, Watch, plain

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["LivePage", "observed"]

ASSETS = Path(__file__).with_name("_live_assets")
_TYPES = {
    "transfers": ("transfers.html", "text/html; charset=utf-8"),
    "transfers.js": ("transfers.js", "text/javascript; charset=utf-8"),
    "transfers.css": ("transfers.css", "text/css; charset=utf-8"),
}
_COOKIE = "wsgipipe_live"
#: The page's own files only; nothing inline, nothing from elsewhere.
_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"


class LivePage:
    """The WSGI routes of the live page for ``live``, under ``prefix``."""

    def __init__(self, live: Live, *, token: str | None = None, prefix: str = "/-/") -> None:
        if token is not None and len(token) < 16:
            raise ConfigurationError("a live-page token needs at least 16 characters")
        self.live = live
        self.token = token
        self.prefix = prefix
        self.assets = {name: (ASSETS / file).read_bytes() for name, (file, _) in _TYPES.items()}

    def routes(self) -> dict[str, Route]:
        found: dict[str, Route] = {self.prefix + "transfers.json": self.data}
        for name in _TYPES:
            found[self.prefix + name] = self._asset(name)
        return found

    # -- protection ---------------------------------------------------------------
    def allowed(self, environ: WSGIEnvironment) -> bool:
        if self.token is None:
            return _loopback(environ.get("REMOTE_ADDR", ""))
        return any(hmac.compare_digest(t.encode(), self.token.encode()) for t in _tokens(environ))

    def _refuse(self, start_response: StartResponse) -> list[bytes]:
        why = "a token is required" if self.token else "only loopback clients may see this"
        return plain(start_response, "403 Forbidden", why)

    # -- the routes -----------------------------------------------------------------
    def data(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self.allowed(environ):
            return self._refuse(start_response)
        body = json.dumps(self.live.snapshot()).encode()
        start_response("200 OK", _headers("application/json", body))
        return [body]

    def _asset(self, name: str) -> Route:
        content_type = _TYPES[name][1]
        body = self.assets[name]

        def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if not self.allowed(environ):
                return self._refuse(start_response)
            headers = _headers(content_type, body)
            if self.token is not None and name == "transfers":
                # The page's script, stylesheet and JSON requests carry this.
                cookie = f"{_COOKIE}={self.token}; Path={self.prefix}; HttpOnly; SameSite=Strict"
                headers.append(("Set-Cookie", cookie))
            start_response("200 OK", headers)
            return [body]

        return serve


def _headers(content_type: str, body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", _CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # no address (a Unix socket has none) is not proof of loopback


def _tokens(environ: WSGIEnvironment) -> list[str]:
    found: list[str] = []
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    found += parse_qs(environ.get("QUERY_STRING", "")).get("token", [])
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # a malformed Cookie header is simply no token
        return found
    if _COOKIE in cookies:
        found.append(cookies[_COOKIE].value)
    return found


def observed(
    app: WSGIApplication,
    *,
    metrics: bool = False,
    live: bool | Live = False,
    live_token: str | None = None,
) -> WSGIApplication:
    """``app`` behind the reserved prefix, with metrics and the live page if asked.

    What ``stack()`` adds on top of its TransferLog: ``/-/metrics`` (needs
    ``prometheus_client``), ``/-/transfers`` and ``/-/transfers.json``. Paths
    under ``/-/`` are answered here in every case, so they never reach files.
    """
    observers: list[Observer] = []
    routes: dict[str, Route] = {}
    if metrics:
        from .prometheus import default_metrics  # only when asked: an optional extra

        found = default_metrics()
        observers.append(found)
        routes[PREFIX + "metrics"] = found.exposition_app()
    if live:
        state = live if isinstance(live, Live) else Live()
        observers.append(state)
        routes.update(LivePage(state, token=live_token).routes())
    inner = Watch(app, *observers) if observers else app
    return Reserved(inner, routes)
