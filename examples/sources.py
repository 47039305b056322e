"""The example app's routes for sources that are not files (public API only).

* ``GET /zip/<dir>``: the folder under the root as a zip, streamed as it is
  built (Content-Length known, resumable with Range);
* ``GET /gzip/<path>``: the file through ``gzip -c``, a child process whose
  whole process group ends with the response;
* ``GET /proxy/<path>``: the same path on ``WSGIPIPE_UPSTREAM`` (another
  instance of this app does nicely), its connection released on every ending.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from werkzeug.security import safe_join

from wsgipipe import Proxy, process_response, zip_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

PREFIXES = ("/zip/", "/gzip/", "/proxy/")


def not_found(start_response: StartResponse, message: str = "404 Not Found") -> list[bytes]:
    body = f"{message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("404 Not Found", headers)
    return [body]


class Sources:
    """Route ``/zip/``, ``/gzip/`` and ``/proxy/`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        upstream = os.environ.get("WSGIPIPE_UPSTREAM")
        self.proxy = Proxy(upstream) if upstream else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        prefix = next(p for p in PREFIXES if path.startswith(p))
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix[:-1]
        environ["PATH_INFO"] = rest = path[len(prefix) - 1 :]
        name = rest.encode("latin-1").decode("utf-8", "replace").strip("/")
        if prefix == "/zip/":
            return zip_response(environ, start_response, self.root, folder=name)
        if prefix == "/gzip/":
            return self.gzip(environ, start_response, name)
        if self.proxy is None:
            return not_found(start_response, "404 Not Found: WSGIPIPE_UPSTREAM is not set")
        return self.proxy(environ, start_response)

    def gzip(
        self, environ: WSGIEnvironment, start_response: StartResponse, name: str
    ) -> Iterable[bytes]:
        fd = self.open(name)
        if fd is None:
            return not_found(start_response)
        # The file goes in as stdin (gzip -c < file): the child never sees a
        # path, so it cannot be sent anywhere outside the root.
        safe = os.path.basename(name).replace('"', "").replace("\\", "")
        attachment = f'attachment; filename="{safe}.gz"'
        return process_response(
            environ,
            start_response,
            ["gzip", "-c"],
            content_type="application/gzip",
            headers=[("Content-Disposition", attachment)],
            stdin=fd,
        )

    def open(self, name: str) -> int | None:
        """A descriptor for a regular, non-hidden file really inside the root, or None."""
        path = safe_join(str(self.root), name)
        if path is None or any(part.startswith(".") for part in name.split("/")):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not real.startswith(f"{self.root}{os.sep}"):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
        return fd
