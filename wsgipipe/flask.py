"""Flask integration: file errors answered alike in tests and production, zero-copy files.

Three things, each one line in the app (docs/flask.md):

* ``Wsgipipe(app)`` registers an error handler so that a view raising
  :class:`FileNotFoundError` answers 404 (:class:`PermissionError` 403, any
  other :class:`OSError` 500) in production exactly as under
  ``app.testing``, where Flask would otherwise let the exception through to
  the test while production serves its own 500; and it wraps
  ``app.wsgi_app`` in :class:`~wsgipipe.TransferLog` (one line per response).
* :func:`send_file` / :func:`send_from_directory` return a
  :class:`FileResponse`: ranges, conditional GET and HEAD as
  :func:`wsgipipe.file_response`, and the file handed to the server's
  ``wsgi.file_wrapper`` untouched, so gunicorn sends it with ``sendfile``.
* :func:`current_transfer` gives the view this request's
  :class:`~wsgipipe.Transfer`, e.g. to add a note to its line.

This is the only module of wsgipipe that imports Flask.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import flask
from werkzeug.security import safe_join

from . import _record
from ._body import Body
from ._file_errors import FileErrors
from ._response import file_response
from ._stream import server_body
from ._transfer_log import TransferLog
from ._view_errors import MAPPED, answer_for

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ._record import Transfer

__all__ = ["FileResponse", "Wsgipipe", "current_transfer", "send_file", "send_from_directory"]

StrPath = str | os.PathLike[str]


class FileResponse(flask.Response):
    """A Flask response whose file body reaches the server untouched.

    Flask's usual path wraps the body in a ``ClosingIterator``, which hides
    the file from gunicorn (Python loop instead of ``sendfile``). Here the
    wsgipipe stream is handed to the server's ``wsgi.file_wrapper`` when the
    response is sent, after every ``after_request`` hook has run, and the
    response's own ``call_on_close`` callbacks still run when the server
    closes the body.
    """

    def get_app_iter(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        body = self.response
        if not (
            self.direct_passthrough and isinstance(body, Body) and self._sends_content(environ)
        ):
            return super().get_app_iter(environ)  # closes this response, callbacks included
        # The server will close the body, never this response: its close()
        # (a no-op on the closed body) then runs the call_on_close callbacks.
        body.on_close(lambda _body: self.close())
        return server_body(environ, body)  # a FileStream goes to wsgi.file_wrapper

    def _sends_content(self, environ: WSGIEnvironment) -> bool:
        # RFC 9110 §9.3.2 and §15.4.5: HEAD and 304 carry no content; an
        # after_request hook may have turned the response into either.
        return environ["REQUEST_METHOD"] != "HEAD" and self.status_code in (200, 206)


_COMBINED: dict[type[flask.Response], type[FileResponse]] = {}


def _response_class(base: type[flask.Response]) -> type[FileResponse]:
    """FileResponse on top of the app's own response class, if it has one.

    Flask converts a response that is not an instance of
    ``app.response_class`` by changing its class, which would drop the
    zero-copy path; a combined class passes through as it is.
    """
    if issubclass(base, FileResponse):
        return base
    if base not in _COMBINED:
        _COMBINED[base] = type(f"{base.__name__}FileResponse", (FileResponse, base), {})
    return _COMBINED[base]


def send_file(path: StrPath, **options: Any) -> FileResponse:
    """Flask's ``send_file`` on :func:`wsgipipe.file_response`, for the current request.

    ``options`` are those of :func:`wsgipipe.file_response`:
    ``download_name``, ``as_attachment``, ``mimetype``, ``cache_control``
    (``"no-cache"`` unless given), ``zero_copy`` and ``small_file``.
    Handles HEAD, ``If-None-Match``/``If-Modified-Since`` (304),
    ``If-Match``/``If-Unmodified-Since`` (412), ``Range``/``If-Range``
    (206/416) and ``Content-Disposition`` (RFC 6266). Raises
    :class:`FileNotFoundError` for a missing or non-regular file: with
    :class:`Wsgipipe` installed that is a 404.
    """
    decided = file_response(flask.request.environ, path, **options)
    cls = _response_class(flask.current_app.response_class)
    return cls(decided.body, decided.status, decided.headers, direct_passthrough=True)


def send_from_directory(directory: StrPath, path: str, **options: Any) -> FileResponse:
    """:func:`send_file` for ``path`` under ``directory``; a path that escapes it is a 404.

    ``path`` is untrusted (it usually comes from the URL): werkzeug's
    ``safe_join`` refuses ``..``, absolute paths and other separators.
    """
    joined = safe_join(os.fspath(directory), path)
    if joined is None:
        raise FileNotFoundError(2, "outside the directory", path)
    return send_file(joined, **options)


def current_transfer() -> Transfer | None:
    """This request's transfer record, when a :class:`~wsgipipe.TransferLog` is around the app.

    Add facts to its line with ``current_transfer().notes["user"] = name``.
    """
    return _record.current_transfer(flask.request.environ)


class Wsgipipe:
    """The Flask extension: ``Wsgipipe(app)``, or ``Wsgipipe().init_app(app)`` in a factory.

    * Registers an error handler for :class:`OSError` and
      :class:`wsgipipe.HTTPError` raised in views and hooks: 404 for a
      missing file, 403 for a refused one (404 with ``hide_forbidden``), 500
      for the rest, the same plain answers as :class:`wsgipipe.FileErrors`,
      whatever ``app.testing`` says. A handler you register for a narrower
      class (say ``FileNotFoundError``) still wins.
    * Unless ``transfer_log=False``, wraps ``app.wsgi_app`` in
      ``TransferLog(FileErrors(...))``: one line per response on the
      ``wsgipipe.transfer_log`` logger, and errors that surface only when the
      server reads a lazily opened body are mapped too.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        transfer_log: bool = True,
        hide_forbidden: bool = False,
    ) -> None:
        self.transfer_log = transfer_log
        self.hide_forbidden = hide_forbidden
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        for exc_class in MAPPED:
            app.register_error_handler(exc_class, self._answer)
        if self.transfer_log:
            inner = FileErrors(app.wsgi_app, hide_forbidden=self.hide_forbidden)
            app.wsgi_app = TransferLog(inner)  # type: ignore[method-assign]
        app.extensions["wsgipipe"] = self

    def _answer(self, exc: Exception) -> flask.Response:
        answer = answer_for(flask.request.environ, exc, hide_forbidden=self.hide_forbidden)
        return flask.current_app.response_class(answer.body, answer.status, answer.headers)
