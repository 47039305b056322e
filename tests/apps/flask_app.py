"""A Flask app in production mode (``app.testing`` is False) using wsgipipe.flask.

Run in-process by tests/test_flask.py and by gunicorn from this folder
(``flask_app:production()``, files from ``WSGIPIPE_TEST_ROOT``). Routes:

* ``/files/<path>``: :func:`wsgipipe.flask.send_from_directory`;
* ``/download/<name>``: the same as an attachment under another name;
* ``/noted/<name>``: adds a note to the transfer line from the view;
* ``/read/<name>``: reads the file in the view (a missing one raises there);
* ``/forbidden`` and ``/broken``: a view raising PermissionError / EIO.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from flask import Flask

from wsgipipe import log_to_stderr
from wsgipipe.flask import Wsgipipe, current_transfer, send_file, send_from_directory


def create_app(
    root: str | os.PathLike[str],
    *,
    testing: bool = False,
    extension: bool = True,
    hide_forbidden: bool = False,
) -> Flask:
    app = Flask(__name__)
    app.testing = testing
    base = Path(root)

    @app.get("/files/<path:name>")
    def files(name: str):  # type: ignore[no-untyped-def]
        return send_from_directory(base, name)

    @app.get("/download/<name>")
    def download(name: str):  # type: ignore[no-untyped-def]
        return send_file(base / name, download_name="Rapport été.bin", as_attachment=True)

    @app.get("/noted/<name>")
    def noted(name: str):  # type: ignore[no-untyped-def]
        transfer = current_transfer()
        if transfer is not None:
            transfer.notes["user"] = "alice"
        return send_file(base / name)

    @app.get("/read/<name>")
    def read(name: str):  # type: ignore[no-untyped-def]
        return (base / name).read_bytes()  # FileNotFoundError comes out of the view

    @app.get("/forbidden")
    def forbidden():  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(base / "secret"))

    @app.get("/broken")
    def broken():  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error", str(base / "disk"))

    if extension:
        Wsgipipe(app, hide_forbidden=hide_forbidden)
    return app


def production() -> Flask:
    """What gunicorn runs (``"flask_app:production()"``): transfer lines on stderr."""
    log_to_stderr()
    return create_app(os.environ["WSGIPIPE_TEST_ROOT"])
