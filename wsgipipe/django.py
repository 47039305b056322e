"""Django integration: file errors mapped before Django's 500, zero-copy file responses.

* :class:`FileErrorsMiddleware` (add it to ``MIDDLEWARE``) answers a view's
  :class:`FileNotFoundError` with 404, :class:`PermissionError` with 403
  (404 with ``WSGIPIPE_HIDE_FORBIDDEN = True``) and any other
  :class:`OSError` with a plain 500, as :class:`wsgipipe.FileErrors` would;
  Django itself turns them all into its 500 page.
* :class:`FileResponse` is Django's ``FileResponse`` on
  :func:`wsgipipe.file_response`: HEAD, conditional GET, ranges,
  ``Content-Disposition``, and the file handed to the server's
  ``wsgi.file_wrapper`` (``sendfile`` under gunicorn) through Django's own
  ``file_to_stream`` path.
* :func:`current_transfer` gives a view this request's
  :class:`~wsgipipe.Transfer`.

The transfer lines come from wrapping the WSGI application in ``wsgi.py``::

    application = TransferLog(get_wsgi_application())

This is the only module of wsgipipe that imports Django (docs/django.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from . import _record
from ._response import file_response
from ._stream import FileStream
from ._view_errors import MAPPED, answer_for

if TYPE_CHECKING:
    from ._record import Transfer

__all__ = ["FileErrorsMiddleware", "FileResponse", "current_transfer"]


class FileResponse(StreamingHttpResponse):  # type: ignore[misc]  # Django ships no type hints
    """A streaming response for one file, decided like :func:`wsgipipe.file_response`.

    ``FileResponse(request, path, as_attachment=True)``; the keyword
    options are those of :func:`wsgipipe.file_response`. Raises
    :class:`FileNotFoundError` for a missing or non-regular file (a 404 with
    :class:`FileErrorsMiddleware`). When the server offers
    ``wsgi.file_wrapper`` and the body can go zero-copy, Django's handler
    gives the server the file itself; otherwise the body is read in Python.
    A middleware that replaces ``streaming_content`` (say, gzip) turns the
    zero-copy path off, since the file is then not what is sent.
    """

    def __init__(self, request: HttpRequest, path: str | os.PathLike[str], **options: Any) -> None:
        decided = file_response(request.META, path, **options)
        self._body: Iterable[bytes] = decided.body
        self._close_body: Callable[[], object] | None = getattr(decided.body, "close", None)
        self.file_to_stream: FileStream | None = None
        super().__init__(decided.body, status=decided.status, headers=dict(decided.headers))
        if not any(name == "Content-Type" for name, _ in decided.headers):
            del self.headers["Content-Type"]  # a 304 has none (RFC 9110 §15.4.5)
        self._offer_file(request, decided.body)

    def _offer_file(self, request: HttpRequest, body: Iterable[bytes]) -> None:
        # for_server() positions the descriptor at the range start and says
        # whether this body can go zero-copy here; Django's handler then
        # wraps the same stream in the server's wsgi.file_wrapper.
        if isinstance(body, FileStream) and body.for_server(request.META) is not body:
            self.file_to_stream = body
            self.block_size = body.chunk_size

    def _set_streaming_content(self, value: Any) -> None:
        super()._set_streaming_content(value)
        if value is not self._body:
            self.file_to_stream = None  # a middleware replaced what is sent
        elif self._close_body is not None:
            # close() runs it itself: Django's own loop would swallow the
            # error a shrunken file raises to make the server drop the connection.
            self._resource_closers.remove(self._close_body)

    def close(self) -> None:
        close_body, self._close_body = self._close_body, None
        try:
            if close_body is not None:
                close_body()
        finally:
            super().close()


def current_transfer(request: HttpRequest) -> Transfer | None:
    """This request's transfer record, when ``wsgi.py`` wraps Django in a TransferLog."""
    return _record.current_transfer(request.META)


class FileErrorsMiddleware:
    """Map file errors raised in views to 404/403/500 before Django's 500 handler.

    Add ``"wsgipipe.django.FileErrorsMiddleware"`` to ``MIDDLEWARE``. Only
    :class:`OSError` and :class:`wsgipipe.HTTPError` are answered; every
    other exception (and ``Http404``) goes to Django as usual. The answer is
    the same short plain text as :class:`wsgipipe.FileErrors`, and the
    error is logged on ``wsgipipe.file_errors`` and noted on the transfer.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.hide_forbidden = bool(getattr(settings, "WSGIPIPE_HIDE_FORBIDDEN", False))

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, MAPPED):
            return None
        answer = answer_for(request.META, exception, hide_forbidden=self.hide_forbidden)
        return HttpResponse(answer.body, status=answer.status, headers=dict(answer.headers))
