"""Static: serve a directory with full HTTP semantics, zero-copy or offloaded.

Every request opens the file, fstats that descriptor and checks where the
descriptor really points before anything is answered, so that a request can
never reach outside the root and a changed file never gets stale headers.
Per-path headers are cached, keyed on the fstat of the open descriptor.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING
from urllib.parse import quote

from . import _http as http
from . import _static_rules as rules
from ._entity import Entity, entity_for
from ._error_response import error_response
from ._errors import FileChanged
from ._files import OPEN_FLAGS, stat_key
from ._record import current_transfer
from ._response import SMALL_FILE, respond

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Static"]

Headers = list[tuple[str, str]]

_ALLOW = [("Allow", "GET, HEAD")]
_PROC_FD = "/proc/self/fd/"
# Bounded caches: a flood of distinct paths costs at most this many entries.
_CACHE_LIMIT = 4096
_CACHED_PATH_LENGTH = 512


class Static:
    """A WSGI app serving files under ``root``; with ``app``, middleware in front of it.

    Paths that are not a servable file fall through to ``app`` (or get a
    404); see ``docs/static.md`` for every option and the HTTP semantics.
    Raises :class:`ConfigurationError` at once for a missing root or an
    unknown option value.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        app: WSGIApplication | None = None,
        index: str | None = "index.html",
        max_age: int | None = 60,
        immutable: str | None = rules.HASHED_NAME,
        precompressed: Iterable[str] = ("br", "gzip"),
        follow_symlinks: bool = False,
        allow_hidden: bool = False,
        mimetypes: Mapping[str, str] | None = None,
        headers: Callable[[str], Iterable[tuple[str, str]]] | None = None,
        offload: str | None = None,
        offload_prefix: str = "/_wsgipipe_files/",
        zero_copy: bool = True,
        small_file: int = SMALL_FILE,
    ) -> None:
        self.root = rules.real_root(root)
        self.app = app
        self.index = rules.check_index(index)
        self.follow_symlinks = follow_symlinks
        self.allow_hidden = allow_hidden
        self.zero_copy = zero_copy
        self.small_file = small_file
        self.mimetypes = rules.check_types(mimetypes)
        self.headers = headers
        self.offload = rules.check_offload(offload)
        self.offload_prefix = rules.check_prefix(offload_prefix)
        self.encodings = rules.check_encodings(precompressed)
        self._cache_control = rules.cache_policy(max_age, immutable)
        self._use_proc = os.path.isdir(_PROC_FD)
        self._root_slash = os.path.join(self.root, "")
        self._names: dict[str, str | None] = {}
        self._entities: dict[tuple[str, str], Entity] = {}

    # -- the request path ---------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        name = self._name(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "GET" and method != "HEAD":
            if self.app is not None and (name is None or not self._is_file(name)):
                return self.app(environ, start_response)
            # RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
            return error_response(environ, start_response, 405, headers=_ALLOW)
        found = self._open(name, environ) if name is not None else None
        if found is None:
            if self.app is not None:
                return self.app(environ, start_response)
            return error_response(environ, start_response, 404)
        if isinstance(found, str):
            return _redirect(start_response, found)
        fd, st, entity, path = found
        if self.offload is not None and (self.offload != "x-sendfile" or _in_header(path)):
            os.close(fd)
            return self._offloaded(start_response, entity, name or "", path)
        try:
            response = respond(
                environ,
                fd,
                st,
                entity,
                name=path,
                zero_copy=self.zero_copy,
                small_file=self.small_file,
            )
        except FileChanged as exc:
            # Rewritten between two fstats: nothing is sent yet, so say 500
            # (an OSError reaching gunicorn would close without any answer).
            return _changed(environ, start_response, exc)
        return response(environ, start_response)

    def _name(self, path_info: str) -> str | None:
        """The request path as a relative file name, or None if refused (cached)."""
        try:
            return self._names[path_info]
        except KeyError:
            pass
        name = rules.safe_name(path_info, self.index, self.allow_hidden)
        if len(path_info) <= _CACHED_PATH_LENGTH:
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[path_info] = name
        return name

    # -- opening ------------------------------------------------------------
    def _open(
        self, name: str, environ: WSGIEnvironment
    ) -> tuple[int, os.stat_result, Entity, str] | str | None:
        """The open file for ``name`` (a precompressed sibling if the client takes it).

        Returns a redirect location for a directory that has an index, and
        None for everything that must look like a missing file.
        """
        path = self._root_slash + name
        # Offloaded files are sent by the front server, which negotiates itself.
        use_variants = self.encodings and self.offload is None
        accept = environ.get("HTTP_ACCEPT_ENCODING") if use_variants else None
        if accept:
            variant = self._open_variant(name, path, accept)
            if variant is not None:
                return variant
        found = self._open_version(name, path, "")
        if found == "dir":
            return self._directory(name)
        return found if isinstance(found, tuple) else None

    def _open_variant(
        self, name: str, path: str, accept: str
    ) -> tuple[int, os.stat_result, Entity, str] | None:
        """The best precompressed sibling the client accepts, if it is not stale.

        A sibling older than the file itself is skipped: the file changed after
        it was compressed, and serving the old bytes would be a stale response.
        ``gzip -k`` and ``brotli`` keep the original's mtime, so fresh ones pass.
        """
        try:
            original = os.stat(path)
        except OSError:
            return None  # no file, no variants: the same 404 for everyone
        if not stat.S_ISREG(original.st_mode):
            return None  # "dir.gz" is no encoding of the directory "dir"
        for coding in http.choose_encoding(accept, self.encodings):
            found = self._open_version(name, path + rules.SUFFIXES[coding], coding)
            if not isinstance(found, tuple):
                continue
            if found[1].st_mtime_ns >= original.st_mtime_ns:
                return found
            os.close(found[0])
        return None

    def _open_version(
        self, name: str, path: str, coding: str
    ) -> tuple[int, os.stat_result, Entity, str] | str | None:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return "dir" if stat.S_ISDIR(st.st_mode) else None
            entity = self._entity(name, path, coding, fd, st)
            if entity is None:
                os.close(fd)
                return None
            return fd, st, entity, path
        except BaseException:
            os.close(fd)
            raise

    def _entity(
        self, name: str, path: str, coding: str, fd: int, st: os.stat_result
    ) -> Entity | None:
        # A cached entity was built for this path after its descriptor passed
        # the containment check; it is reused only for the very same file
        # version (device, inode, size, mtime) the fresh fstat reports.
        cached = self._entities.get((path, coding))
        if cached is not None and cached.key == stat_key(st):
            return cached
        if not self._contained(path, fd):
            return None
        entity = self._build_entity(name, coding, st)
        if len(self._entities) >= _CACHE_LIMIT:
            self._entities.clear()
        self._entities[(path, coding)] = entity
        return entity

    def _contained(self, path: str, fd: int) -> bool:
        """Whether the open descriptor may be served: inside the root, not hidden.

        With ``follow_symlinks`` a link may lead out of the root, but what it
        resolves to must still not be hidden (a link to ``.git/config``).
        """
        # /proc/self/fd names the file we actually opened: no race with a
        # symlink swapped after open(2), unlike a second realpath(path).
        real = os.readlink(_PROC_FD + str(fd)) if self._use_proc else os.path.realpath(path)
        if os.path.commonpath((self.root, real)) == self.root:
            real = os.path.relpath(real, self.root)
        elif not self.follow_symlinks:
            return False
        return self.allow_hidden or not any(s.startswith(".") for s in real.split(os.sep))

    def _build_entity(self, name: str, coding: str, st: os.stat_result) -> Entity:
        extra: Headers = []
        cache_control = self._cache_control(name)
        if cache_control:
            extra.append(("Cache-Control", cache_control))
        if coding:
            extra.append(("Content-Encoding", coding))
        if self.encodings:
            # Every version may differ by Accept-Encoding (RFC 9110 §12.5.5).
            extra.append(("Vary", "Accept-Encoding"))
        if self.headers is not None:
            extra.extend(self.headers(name))
        content_type = http.content_type(name, self.mimetypes)
        return entity_for(st, content_type, tag=coding, extra=extra)

    def _directory(self, name: str) -> str | None:
        # "/docs" names a directory: send the client to "/docs/" so that the
        # index's relative links resolve, but only if that index exists.
        if self.index is None or not self._is_file(f"{name}/{self.index}"):
            return None
        return quote(name.rsplit("/", 1)[-1]) + "/"

    def _is_file(self, name: str) -> bool:
        found = self._open_version(name, os.path.join(self.root, name), "")
        if isinstance(found, tuple):
            os.close(found[0])
            return True
        return False

    # -- offload ------------------------------------------------------------
    def _offloaded(
        self, start_response: StartResponse, entity: Entity, name: str, path: str
    ) -> list[bytes]:
        """Headers only: the front server sends the file (and handles ranges)."""
        if self.offload == "x-sendfile":
            # PEP 3333 header values are the bytes as latin-1: the path's own
            # bytes (UTF-8 names included) reach the front server unchanged.
            target = ("X-Sendfile", os.fsencode(path).decode("latin-1"))
        else:
            target = ("X-Accel-Redirect", self.offload_prefix + quote(name))
        keep = [(k, v) for k, v in entity.headers if k in ("Content-Type", "Cache-Control")]
        start_response("200 OK", [*keep, target, ("Content-Length", "0")])
        return []


def _in_header(path: str) -> bool:
    """Whether ``path`` can be named in a header (RFC 9110 section 5.5: no CR, LF or NUL).

    A file whose name has a control character is served by this app instead.
    """
    return not any(byte < 0x20 or byte == 0x7F for byte in os.fsencode(path))


def _changed(
    environ: WSGIEnvironment, start_response: StartResponse, exc: FileChanged
) -> list[bytes]:
    record = current_transfer(environ)
    if record is not None:
        record.error = exc
    return error_response(environ, start_response, 500)


def _redirect(start_response: StartResponse, location: str) -> list[bytes]:
    # RFC 9110 §10.2.2: a relative Location resolves against the request URL.
    start_response(
        "301 Moved Permanently",
        [("Location", location), ("Content-Length", "0"), ("Cache-Control", "no-cache")],
    )
    return []
