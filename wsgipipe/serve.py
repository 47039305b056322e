"""Serve a folder: the middleware stack shared by ``wsgipipe serve`` and the example app.

:func:`folder_app` is what ``wsgipipe serve DIR`` runs; :func:`stack` wraps
any app in the same layers, outermost first:

* :class:`~wsgipipe.TransferLog`: one line per response at ``close()``;
* :class:`~wsgipipe.IdleTimeout`: a client that reads nothing for N seconds
  is cut off (30 s by default);
* :class:`~wsgipipe.Tee`: extra sinks (``stdout``, ``sha256``, ``dir:PATH``);
* :class:`~wsgipipe.Throttle`: an optional server-side rate limit;
* :class:`~wsgipipe.FileErrors` around the file app: 404/403, never a
  traceback or a path.

Throttle and Tee sit outside FileErrors on purpose: FileErrors pulls the first
chunk of a wrapped body early to catch errors, and a throttle's wait must not
happen before the status is decided.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from . import sinks
from .connection import IdleTimeout
from .errormap import FileErrors
from .errors import ConfigurationError
from .stream import FileStream
from .tee import Tee
from .through import Throttle
from .transfer import TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["DEFAULT_IDLE_TIMEOUT", "files", "folder_app", "parse_tee", "stack"]

#: Seconds a client may accept no bytes before it is cut off. Long enough
#: for any real network hiccup, short enough that a stalled client cannot
#: hold a worker thread and a file for ever.
DEFAULT_IDLE_TIMEOUT = 30.0


def parse_tee(spec: str | Iterable[str]) -> list[object]:
    """Sinks from ``"stdout,sha256,dir:/tmp/copies"`` (any hashlib name works as a digest).

    Raises :class:`~wsgipipe.errors.ConfigurationError` for anything unknown.
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


def stack(
    app: WSGIApplication,
    *,
    tee: str | Iterable[str] = (),
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    limit_rate: str | float | None = None,
) -> WSGIApplication:
    """Wrap ``app`` in wsgipipe's serving layers (see the module docstring).

    ``idle_timeout`` of None or 0 turns the idle timeout off.
    """
    if limit_rate:
        app = Throttle(app, limit_rate)
    sinks_ = parse_tee(tee)
    if sinks_:
        app = Tee(app, *sinks_)
    if idle_timeout:
        app = IdleTimeout(app, idle_timeout)
    return TransferLog(app)


def folder_app(
    root: str | os.PathLike[str],
    *,
    tee: str | Iterable[str] = (),
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    limit_rate: str | float | None = None,
) -> WSGIApplication:
    """The app ``wsgipipe serve DIR`` runs: files under ``root`` through :func:`stack`."""
    return stack(files(root), tee=tee, idle_timeout=idle_timeout, limit_rate=limit_rate)


def files(root: str | os.PathLike[str], *, index: str = "index.html") -> WSGIApplication:
    """GET/HEAD of regular files under ``root``, behind :class:`~wsgipipe.FileErrors`.

    A directory serves its ``index`` or is a 404; nothing outside ``root``
    (``..``, symlinks leading out) is ever served. Raises
    :class:`~wsgipipe.errors.ConfigurationError` at once if ``root`` is not
    a directory.
    """
    return FileErrors(_Files(root, index))


class _Files:
    def __init__(self, root: str | os.PathLike[str], index: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ConfigurationError(f"cannot serve {os.fspath(root)!r}: not a directory")
        self.index = index

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            body = b"405 Method Not Allowed\n"
            start_response(
                "405 Method Not Allowed",
                [
                    ("Allow", "GET, HEAD"),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        stream = FileStream(self._resolve(environ.get("PATH_INFO", "/")))
        try:
            if not stream.is_regular:
                raise IsADirectoryError("not a regular file")  # no FIFO or device: 404
            kind, _ = mimetypes.guess_type(stream.name)
            headers = [
                ("Content-Type", kind or "application/octet-stream"),
                ("Content-Length", str(stream.size)),
            ]
        except BaseException:
            stream.close()
            raise
        start_response("200 OK", headers)
        return stream

    def _resolve(self, path_info: str) -> str:
        try:
            # PEP 3333: PATH_INFO is the raw bytes decoded as latin-1.
            name = path_info.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise FileNotFoundError("undecodable path") from None
        path = safe_join(self.root, name.lstrip("/") or ".")
        if path is None or "\x00" in path:
            raise FileNotFoundError("outside the root")
        if os.path.isdir(path):
            path = os.path.join(path, self.index)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.root]) != self.root:
            raise FileNotFoundError("symlink out of the root")  # F37: 404, no oracle
        return real
