"""Which responses the offloading worker hands to its sender, and what it hands over.

A response is offloaded only when the kernel can send it as it is: the app
returned the server's ``wsgi.file_wrapper`` over a regular file, the length
is announced, and nothing has to touch the bytes on the way (no TLS, no
HTTP/2 framing, no chunked encoding). Everything else takes gthread's own
path, unchanged.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime
from typing import Any

from gunicorn import util

from .._body import Body
from ._sender import Job

__all__ = ["Handoff", "body_of", "close_now", "offloadable"]


class Handoff(Job):
    """A :class:`Job` plus what gthread needs to finish the request afterwards."""

    def __init__(
        self,
        found: tuple[int, int, int],
        conn: Any,
        req: Any,
        resp: Any,
        environ: dict[str, Any],
        respiter: Iterable[bytes],
        started: datetime,
    ) -> None:
        super().__init__(conn.sock, *found)
        self.conn = conn
        self.req = req
        self.resp = resp
        self.environ = environ
        self.respiter = respiter
        self.started = started
        #: Whether the response announced keep-alive (gthread's rule).
        self.keepalive = not resp.should_close()


def offloadable(
    conn: Any, resp: Any, respiter: object, environ: dict[str, Any]
) -> tuple[int, int, int] | None:
    """``(fd, offset, count)`` when ``respiter`` can go to the sender, else None."""
    wrapper = environ.get("wsgi.file_wrapper")
    if not isinstance(wrapper, type) or not isinstance(respiter, wrapper):
        return None
    # TLS needs the bytes in user space to encrypt them, and HTTP/2 frames
    # them (RFC 9113 section 6.1): both stay on gthread's path.
    if resp.cfg.is_ssl or conn.is_http2 or not resp.can_sendfile():
        return None
    # Unknown length means chunked framing or a close-delimited body
    # (RFC 9112 section 6.3); HEAD, 1xx, 204 and 304 carry no body at all.
    count = resp.response_length
    if resp.chunked or resp.upgrade or resp._omits_body or count is None or count <= 0:
        return None
    return _regular_file(getattr(respiter, "filelike", None), count)


def _regular_file(filelike: object, count: int) -> tuple[int, int, int] | None:
    if not util.has_fileno(filelike):
        return None
    try:
        fd = int(filelike.fileno())  # type: ignore[attr-defined]
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # pipes, sockets, devices: sendfile would block or fail
        # Like gunicorn, send from the file's current position (gunicorn PR#2687).
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    except (OSError, ValueError):
        return None
    return fd, offset, count


def close_now(sock: socket.socket, *, reset: bool = False) -> None:
    """Close without blocking: half-close, drain what the client sent, close.

    ``reset`` (a cut or aborted transfer) drops what is still queued for the
    client and sends RST, so that the kernel stops feeding a client that was
    cut off (SO_LINGER with a zero timeout, socket(7)).

    gunicorn's ``close_graceful`` lingers up to 2 s for the client's FIN;
    done for every slow reader on the worker's main thread, that would stall
    the worker. Draining what is already readable is enough to avoid the RST
    that unread request bytes would cause (RFC 9112 section 9.6).
    """
    if reset:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        util.close(sock)
        return
    with suppress(OSError):
        sock.setblocking(False)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            try:
                if not sock.recv(65536):
                    break
            except OSError:  # nothing more buffered (EAGAIN) or the client is gone
                break
    util.close(sock)


def body_of(respiter: object) -> Body | None:
    """The wsgipipe body behind a response (itself, or the file inside a file wrapper)."""
    if isinstance(respiter, Body):
        return respiter
    filelike = getattr(respiter, "filelike", None)
    return filelike if isinstance(filelike, Body) else None
