"""One file as a complete HTTP response: the decision and the one-file helper.

:func:`respond` decides status, headers and body for an open file (preconditions,
ranges, HEAD); :func:`file_response` opens one file and calls it, and
:class:`wsgipipe.Static` builds on the same :func:`respond`. The rules come from
:mod:`wsgipipe._http`; the bytes go through :class:`~wsgipipe.FileStream`
(zero-copy through the server's ``wsgi.file_wrapper`` for full and single
ranges) or one of the bodies in :mod:`wsgipipe._file_bodies` (read in Python).
"""

from __future__ import annotations

import io
import os
import secrets
from typing import TYPE_CHECKING, NamedTuple

from . import _http as http
from ._body import Body, close_iterable, server_wrapper
from ._entity import Entity, entity_for
from ._error_response import plain_body, plain_headers, status_line
from ._errors import FileChanged, RangeNotSatisfiable
from ._file_bodies import ByteRanges, Loaded
from ._files import open_regular
from ._handoff import hand_over
from ._stream import DEFAULT_CHUNK_SIZE, FileStream

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment


__all__ = ["SMALL_FILE", "FileResponse", "file_response", "precondition", "respond"]

Headers = list[tuple[str, str]]

#: Bodies up to this size are read at once instead of streamed (see respond()).
SMALL_FILE = 16 * 1024


class FileResponse:
    """A decided response (status, headers, body) that is also a WSGI app.

    Call it as ``response(environ, start_response)``; only then is a
    :class:`FileStream` body handed to the server's file wrapper, so that
    gunicorn can send it with sendfile. If it is never called, ``close()``
    releases the file.
    """

    def __init__(self, status: int, headers: Headers, body: Iterable[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status_line(self.status), self.headers)
        return hand_over(environ, self.body)

    def close(self) -> None:
        close_iterable(self.body)


def respond(
    environ: WSGIEnvironment,
    fd: int,
    st: os.stat_result,
    entity: Entity,
    *,
    name: str = "",
    zero_copy: bool = True,
    small_file: int = SMALL_FILE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> FileResponse:
    """Decide the response for the open regular file ``fd`` whose fstat is ``st``.

    Takes ownership of the descriptor: it ends up in the body or closed.
    Evaluates preconditions (412/304), ``Range``/``If-Range`` (206/416) and
    HEAD, which never reads the file. ``name`` only labels errors.

    Bodies up to ``small_file`` bytes are read with one ``pread`` and the
    descriptor is closed before the response starts: a slow client then
    pins no file, and one read costs less than setting up a stream. Larger
    bodies stream, through the server's ``wsgi.file_wrapper`` when offered
    (sendfile under gunicorn) unless ``zero_copy`` is off. Several ranges
    are always read in Python (:class:`ByteRanges`).
    """
    try:
        status, headers, ranges, plan = _decide(environ, st.st_size, entity)
    except BaseException:
        os.close(fd)
        raise
    if status not in (200, 206) or environ.get("REQUEST_METHOD") == "HEAD":
        os.close(fd)
        return FileResponse(status, headers, _empty(environ, status))
    start, stop = ranges[0] if ranges else (0, st.st_size)
    length = stop - start
    offered = zero_copy and server_wrapper(environ) is not None
    body: Body
    if plan is None and (length <= small_file or (length <= chunk_size and not offered)):
        body = Loaded(fd, start, length, name)  # one read; the descriptor is freed now
    elif plan is not None:
        body = ByteRanges(io.FileIO(fd, "rb", closefd=True), plan, chunk_size=chunk_size)
    else:
        body = _stream(fd, start, length, chunk_size=chunk_size, zero_copy=zero_copy)
    return FileResponse(status, headers, body)


def _stream(fd: int, offset: int, length: int, *, chunk_size: int, zero_copy: bool) -> FileStream:
    """A FileStream over ``fd`` that announces exactly ``length`` bytes.

    It is opened now, so that its own fstat follows ours at once; if the two
    disagree the file is being rewritten, and no response is better than a
    wrong Content-Length (RFC 9112 §6.3).
    """
    file = io.FileIO(fd, "rb", closefd=True)
    stream = FileStream(
        file, offset=offset, length=length, chunk_size=chunk_size, zero_copy=zero_copy
    )
    try:
        stream.open()
        if stream.size != length:
            raise FileChanged(stream.name, length, stream.size or 0)
    except BaseException:
        stream.close()
        raise
    return stream


class _Decision(NamedTuple):
    status: int
    headers: Headers
    ranges: list[http.ByteRange] | None = None
    plan: http.Multipart | None = None


def _decide(environ: WSGIEnvironment, size: int, entity: Entity) -> _Decision:
    method = environ.get("REQUEST_METHOD", "GET")
    status = precondition(environ, method, entity.etag, entity.modified)
    if status == 304:
        return _Decision(304, http.not_modified_headers(entity.headers))
    if status == 412:
        return _Decision(412, _plain_headers(entity, 412))
    headers = list(entity.headers)
    # RFC 9110 §9.3.2: HEAD gets the headers GET would, 206 and Content-Range
    # included (as from nginx); other methods ignore Range (§14.2).
    ranges = _ranges(environ, size, entity) if method in ("GET", "HEAD") else None
    if ranges is None:
        headers.append(("Content-Length", str(size)))
        return _Decision(200, headers)
    if isinstance(ranges, RangeNotSatisfiable):
        # RFC 9110 §15.5.17: the 416 names the current length (Content-Range).
        return _Decision(416, [*_plain_headers(entity, 416), *ranges.headers])
    if len(ranges) == 1:
        headers.append(("Content-Range", ranges[0].content_range(size)))
        headers.append(("Content-Length", str(ranges[0].length)))
        return _Decision(206, headers, ranges)
    plan = http.multipart(ranges, size, entity.content_type, secrets.token_hex(12))
    headers = [(k, v) for k, v in headers if k != "Content-Type"]
    headers += [("Content-Type", plan.content_type), ("Content-Length", str(plan.length))]
    return _Decision(206, headers, ranges, plan)


def precondition(environ: WSGIEnvironment, method: str, etag: str, modified: int) -> int:
    """200, 304 or 412 for this request's conditional headers (RFC 9110 §13.2.2)."""
    get = environ.get
    if_match = get("HTTP_IF_MATCH")
    if_unmodified = get("HTTP_IF_UNMODIFIED_SINCE")
    if_none_match = get("HTTP_IF_NONE_MATCH")
    if_modified = get("HTTP_IF_MODIFIED_SINCE")
    if if_match is None and if_unmodified is None and if_none_match is None and if_modified is None:
        return 200  # the common case costs four dict lookups
    return http.precondition_status(
        method,
        etag,
        modified,
        if_match=if_match,
        if_unmodified_since=if_unmodified,
        if_none_match=if_none_match,
        if_modified_since=if_modified,
    )


def _ranges(
    environ: WSGIEnvironment, size: int, entity: Entity
) -> list[http.ByteRange] | RangeNotSatisfiable | None:
    header = environ.get("HTTP_RANGE")
    if header is None:
        return None
    if not http.if_range_matches(environ.get("HTTP_IF_RANGE"), entity.etag, entity.modified):
        return None  # §13.1.5: the file changed since the client's copy: send it all
    try:
        return http.byte_ranges(header, size)
    except RangeNotSatisfiable as exc:
        return exc


def _plain_headers(entity: Entity, status: int) -> Headers:
    return [*http.not_modified_headers(entity.headers), *plain_headers(status)]


def _empty(environ: WSGIEnvironment, status: int) -> list[bytes]:
    if status in (304, 200, 206) or environ.get("REQUEST_METHOD") == "HEAD":
        return []  # RFC 9110 §9.3.2 (HEAD) and §15.4.5 (304): no content
    return [plain_body(status)]


# -- the one-file helper ----------------------------------------------------------
def file_response(
    environ: WSGIEnvironment,
    path: str | os.PathLike[str],
    *,
    download_name: str | None = None,
    as_attachment: bool = False,
    mimetype: str | None = None,
    cache_control: str | None = "no-cache",
    zero_copy: bool = True,
    small_file: int = SMALL_FILE,
) -> FileResponse:
    """A complete response for one file, as a WSGI app to call.

    ``return file_response(environ, path, as_attachment=True)(environ, start_response)``

    Handles HEAD, conditional requests, ranges and zero-copy like
    :class:`wsgipipe.Static`. ``download_name`` (default: the file's name)
    goes into ``Content-Disposition`` (RFC 6266, ``filename*`` for non-ASCII
    names). ``cache_control`` defaults to ``no-cache``: revalidate every
    time, which the ETag makes cheap. Raises :class:`FileNotFoundError` for a
    missing file, directory or non-regular file (wrap the app in
    :class:`wsgipipe.FileErrors` for a clean 404).
    """
    name = os.fsdecode(path)
    fd, st = open_regular(name)
    try:
        shown = download_name if download_name is not None else os.path.basename(name)
        disposition = http.content_disposition(shown, as_attachment=as_attachment)
        extra = [("Content-Disposition", disposition)]
        if cache_control:
            extra.append(("Cache-Control", cache_control))
        entity = entity_for(st, mimetype or http.content_type(shown or name), extra=extra)
    except BaseException:
        os.close(fd)
        raise
    return respond(environ, fd, st, entity, name=name, zero_copy=zero_copy, small_file=small_file)
