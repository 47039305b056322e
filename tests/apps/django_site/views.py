"""Views using wsgipipe.django: files from settings.FILES_ROOT, and views that raise."""

from __future__ import annotations

import errno
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.gzip import gzip_page
from werkzeug.security import safe_join

from wsgipipe.django import FileResponse, current_transfer


def _root() -> Path:
    return Path(settings.FILES_ROOT)


def files(request: HttpRequest, name: str) -> StreamingHttpResponse:
    path = safe_join(str(_root()), name)
    if path is None:
        raise FileNotFoundError(errno.ENOENT, "outside the root", name)
    return FileResponse(request, path)


def download(request: HttpRequest, name: str) -> StreamingHttpResponse:
    return FileResponse(
        request, _root() / name, download_name="Rapport été.bin", as_attachment=True
    )


def noted(request: HttpRequest, name: str) -> StreamingHttpResponse:
    transfer = current_transfer(request)
    if transfer is not None:
        transfer.notes["user"] = "alice"
    return FileResponse(request, _root() / name)


def read(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse((_root() / name).read_bytes())  # a missing file raises here


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionError(errno.EACCES, "Permission denied", str(_root() / "secret"))


def broken(request: HttpRequest) -> HttpResponse:
    raise OSError(errno.EIO, "Input/output error", str(_root() / "disk"))


@gzip_page
def gzipped(request: HttpRequest, name: str) -> HttpResponseBase:
    return FileResponse(request, _root() / name)
