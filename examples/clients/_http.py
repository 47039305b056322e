"""Tiny raw-socket HTTP/1.1 helpers shared by the client experiments (stdlib only).

The experiments need control that urllib hides: when to stop reading, when
to close, how fast to read. So they speak HTTP over a plain socket.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Response", "connect", "elapsed", "log", "read_head"]

_START = time.monotonic()


def elapsed() -> float:
    """Seconds since the script started (for the printed timeline)."""
    return time.monotonic() - _START


def log(message: str) -> None:
    print(f"[client {elapsed():6.2f}s] {message}", file=sys.stdout, flush=True)


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    #: Body bytes that arrived together with the head.
    rest: bytes = b""

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None


def connect(url: str, *, send: bool = True, rcvbuf: int | None = None) -> socket.socket:
    """Open a connection to ``url``'s host and (unless ``send=False``) send the GET."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if send:
        sock.sendall(request(url))
    return sock


def request(url: str) -> bytes:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()


def read_head(sock: socket.socket) -> Response:
    """Read up to the end of the response head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(lines[0].split()[1]), headers, rest)
