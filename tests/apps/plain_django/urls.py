"""One route: ``<name>`` answered with Django's ``FileResponse`` (its own file wrapper)."""

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path
from werkzeug.security import safe_join


def file(request: HttpRequest, name: str) -> FileResponse:
    found = safe_join(settings.FILES_ROOT, name)
    if found is None:
        raise Http404(name)
    return FileResponse(open(found, "rb"))


urlpatterns = [path("<path:name>", file)]
