"""Four foreign apps that send files with their own file wrapper, bare and wrapped.

Run by gunicorn from this folder (``wrap_app:app``, files from
``WSGIPIPE_TEST_ROOT``) for tests/test_wrapping.py and bench/wrapping.py.
The path is ``/<wrapping>/<app>/<name>``:

* wrapping: ``raw`` (the app as it is), ``tl`` (``TransferLog(app)``) or
  ``tlfe`` (``TransferLog(FileErrors(app))``);
* app: ``flask`` (``send_file``), ``django`` (``FileResponse``, the project
  in ``plain_django``), ``whitenoise`` and ``shared``
  (werkzeug's ``SharedDataMiddleware``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.security import safe_join
from whitenoise import WhiteNoise

from wsgipipe import FileErrors, TransferLog, log_to_stderr

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ROOT = os.environ.get("WSGIPIPE_TEST_ROOT", ".")
os.environ["DJANGO_SETTINGS_MODULE"] = (
    "plain_django.settings"  # its own process: never inherit another project's
)


def _not_found(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def _flask() -> WSGIApplication:
    app = flask.Flask(__name__)

    @app.route("/<path:name>")
    def file(name: str) -> flask.Response:
        found = safe_join(ROOT, name)
        if found is None:
            flask.abort(404)
        return flask.send_file(found)

    return app


def _django() -> WSGIApplication:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


APPS: dict[str, Callable[[], WSGIApplication]] = {
    "flask": _flask,
    "django": _django,
    "whitenoise": lambda: WhiteNoise(_not_found, root=ROOT),
    "shared": lambda: SharedDataMiddleware(_not_found, {"/": ROOT}),
}
WRAPPINGS: dict[str, Callable[[WSGIApplication], WSGIApplication]] = {
    "raw": lambda app: app,
    "tl": TransferLog,
    "tlfe": lambda app: TransferLog(FileErrors(app)),
}

mounts: dict[str, WSGIApplication] = {}
for _name, _make in APPS.items():
    _app = _make()
    for _wrapping, _wrap in WRAPPINGS.items():
        mounts[f"/{_wrapping}/{_name}"] = _wrap(_app)

app = DispatcherMiddleware(_not_found, mounts)
log_to_stderr()
