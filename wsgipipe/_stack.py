"""Serve a folder: the middleware stack shared by ``wsgipipe serve`` and the example app.

:func:`folder_app` is what ``wsgipipe serve DIR`` runs; :func:`stack` wraps
any app in the same layers, outermost first:

* :class:`~wsgipipe.TransferLog`: one line per response at ``close()``;
* :class:`~wsgipipe.IdleTimeout`: a client that reads nothing for N seconds
  is cut off (30 s by default), and so is one that reads slower than the
  minimum rate (:class:`~wsgipipe.MinRate`: 240 B/s after 5 s by default);
* :class:`~wsgipipe.Tee`: extra sinks (``stdout``, ``sha256``, ``dir:PATH``);
* :class:`~wsgipipe.Throttle`: an optional server-side rate limit;
* :class:`~wsgipipe.FileErrors` around the file app (:class:`~wsgipipe.Static`
  for a folder): clean 4xx/5xx, never a traceback or a path.

Throttle and Tee sit outside FileErrors on purpose: FileErrors pulls the first
chunk of a wrapped body early to catch errors, and a throttle's wait must not
happen before the status is decided.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypedDict

from . import sinks
from ._errors import ConfigurationError
from ._file_errors import FileErrors
from ._idle_timeout import IdleTimeout, MinRate, min_rate_from
from ._live import Live
from ._live_page import observed
from ._pace import DEFAULT_MIN_RATE
from ._static import Static
from ._tee import Tee
from ._through import Throttle
from ._transfer_log import TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from typing_extensions import Unpack

__all__ = ["DEFAULT_IDLE_TIMEOUT", "folder_app", "parse_tee", "stack", "static_app"]

#: Seconds a client may accept no bytes before it is cut off. Long enough
#: for any real network hiccup, short enough that a stalled client cannot
#: hold a worker thread and a file for ever.
DEFAULT_IDLE_TIMEOUT = 30.0


def parse_tee(spec: str | Iterable[str]) -> list[object]:
    """Sinks from ``"stdout,sha256,dir:/tmp/copies"`` (any hashlib name works as a digest).

    Raises :class:`~wsgipipe.ConfigurationError` for anything unknown.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    found: list[object] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name == "stdout":
            found.append(sinks.stdout())
        elif name.startswith("dir:") and name[4:]:
            found.append(sinks.DirectorySink(os.path.expanduser(name[4:])))
        else:
            try:
                found.append(sinks.Digest(name))
            except ConfigurationError:
                raise ConfigurationError(
                    f"unknown tee sink {name!r}: use stdout, a hash name such as sha256, "
                    "or dir:PATH"
                ) from None
    return found


class StackOptions(TypedDict, total=False):
    """The keyword options of :func:`stack`, which :func:`folder_app` passes on."""

    tee: str | Iterable[str]
    idle_timeout: float | None
    limit_rate: str | float | None
    min_rate: str | float | None
    metrics: bool
    live: bool | Live
    live_token: str | None


def stack(
    app: WSGIApplication,
    *,
    tee: str | Iterable[str] = (),
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    limit_rate: str | float | None = None,
    min_rate: str | float | None = DEFAULT_MIN_RATE,
    metrics: bool = False,
    live: bool | Live = False,
    live_token: str | None = None,
) -> WSGIApplication:
    """Wrap ``app`` in wsgipipe's serving layers (see the module docstring).

    ``idle_timeout`` of None or 0 turns the idle timeout off; ``min_rate``
    (bytes per second, ``"1k"``) of None or 0 turns the minimum rate off.
    Paths under ``/-/`` are reserved (never files): ``metrics`` serves
    ``/-/metrics``, ``live`` the live transfers page ``/-/transfers``
    (loopback clients only, or whoever has ``live_token``); both off by default.
    """
    floor = min_rate_from(min_rate)
    if limit_rate:
        app = Throttle(app, limit_rate)
    sinks_ = parse_tee(tee)
    if sinks_:
        app = Tee(app, *sinks_)
    if idle_timeout:
        app = IdleTimeout(app, idle_timeout, min_rate=floor)
    elif floor:
        app = MinRate(app, floor)
    return observed(TransferLog(app), metrics=metrics, live=live, live_token=live_token)


def folder_app(root: str | os.PathLike[str], **options: Unpack[StackOptions]) -> WSGIApplication:
    """The app ``wsgipipe serve DIR`` runs: files under ``root`` through :func:`stack`.

    The keyword options are :func:`stack`'s, with the same defaults.
    """
    return stack(static_app(root), **options)


def static_app(root: str | os.PathLike[str], *, index: str = "index.html") -> WSGIApplication:
    """Files under ``root``: :class:`~wsgipipe.Static` behind :class:`~wsgipipe.FileErrors`.

    Static gives the HTTP semantics (ranges, conditional requests, path
    safety, zero-copy); FileErrors turns anything unexpected before the first
    byte into a clean 500. Raises :class:`~wsgipipe.ConfigurationError`
    at once if ``root`` is not a directory.
    """
    return FileErrors(Static(root, index=index))
