"""Talking to a server under test: one raw request, and its transfer lines."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

from ._process import ServerProcess, wait_until

__all__ = ["raw_request", "transfer_lines", "wait_for_transfer"]


def raw_request(
    server: ServerProcess | int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> socket.socket:
    """Send one HTTP/1.1 request to 127.0.0.1 and return the open socket.

    The caller decides what the client does next: read a little and stall,
    close early, or read everything. Close it (``with raw_request(...) as
    sock:``) when done.
    """
    port = server if isinstance(server, int) else server.port
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    except BaseException:
        sock.close()
        raise
    return sock


def transfer_lines(log: str, path: str | None = None, *, method: str = "GET") -> list[str]:
    """The TransferLog lines in ``log`` (any logging format), from the method on.

    With ``path``, only that path's lines, such as
    ``GET /big.bin 200 aborted 65536/1073741824 B 1.20s``.
    """
    target = r"\S+" if path is None else re.escape(path)
    pattern = (
        rf"\b{re.escape(method)} {target} (?:\d{{3}}|-) (?:finished|aborted|failed|running) .*"
    )
    return re.findall(pattern, log)


def wait_for_transfer(
    server: ServerProcess, path: str, *, count: int = 1, timeout: float = 5.0, method: str = "GET"
) -> str:
    """Wait for the ``count``-th transfer line of ``path`` in the server log and return it.

    Fails with the end of the log if it does not come: the transfer line is
    written at ``close()``, which can come after the client saw its last byte.
    """
    if not wait_until(
        lambda: len(transfer_lines(server.log, path, method=method)) >= count, timeout
    ):
        raise AssertionError(
            f"no transfer line #{count} for {method} {path} within {timeout}s:\n"
            + server.log[-3000:]
        )
    return transfer_lines(server.log, path, method=method)[count - 1]
