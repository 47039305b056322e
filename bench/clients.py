"""Load clients: curl for big downloads, wrk for request rates, raw sockets for
the abort and stalled-reader experiments. Only 127.0.0.1 is ever a target.

When curl or wrk is missing, a Python client stands in; it is slower, which
costs absolute figures but not the ratios (every contender gets the same one).
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

_CURL_FORMAT = "%{http_code} %{size_download} %{time_total}"


@dataclass(frozen=True)
class Download:
    status: int
    size: int
    seconds: float


def download(url: str, timeout: float = 120.0) -> Download:
    """GET ``url``, throwing the body away; how many bytes, how long."""
    _local_only(url)
    curl = shutil.which("curl")
    if curl is None:
        return _download_python(url, timeout)
    out = subprocess.run(
        [curl, "-s", "-o", "/dev/null", "--max-time", str(timeout), "-w", _CURL_FORMAT, url],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
    ).stdout.split()
    return Download(int(out[0]), int(out[1]), float(out[2]))


def _download_python(url: str, timeout: float) -> Download:
    parts = urlsplit(url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        buffer, size = bytearray(1 << 20), 0
        while n := response.readinto(buffer):
            size += n
        return Download(response.status, size, time.perf_counter() - started)
    finally:
        conn.close()


def load(url: str, seconds: float, connections: int = 8) -> tuple[float, int]:
    """Requests per second with ``connections`` keep-alive connections; and errors."""
    _local_only(url)
    wrk = shutil.which("wrk")
    if wrk is None:
        return _load_python(url, seconds, connections)
    duration = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = [wrk, "-t", "2", "-c", str(connections), "-d", f"{duration}s", url]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if rate is None:
        raise RuntimeError(f"wrk gave no rate:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    return float(rate.group(1)), failed


def _load_python(url: str, seconds: float, connections: int) -> tuple[float, int]:
    parts = urlsplit(url)
    counts = [0] * connections
    errors = [0] * connections
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            while time.perf_counter() < deadline:
                conn.request("GET", parts.path)
                response = conn.getresponse()
                response.read()
                counts[i] += 1
                errors[i] += response.status >= 400
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(counts) / (time.perf_counter() - started), sum(errors)


def _request(url: str) -> tuple[socket.socket, bytes]:
    _local_only(url)
    parts = urlsplit(url)
    sock = socket.socket()
    # A small receive buffer so that a stalled reader fills up quickly.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(15)
    sock.connect((parts.hostname or "", parts.port or 80))
    host = f"{parts.hostname}:{parts.port}"
    return sock, f"GET {parts.path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("ascii")


def abort_after_first_chunk(url: str) -> float:
    """Read the headers and some body, then close like a killed client; when."""
    sock, request = _request(url)
    try:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or received.endswith(b"\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("server closed before sending a body")
            received += data
    finally:
        aborted = time.monotonic()
        sock.close()
    return aborted


def stalled_reader(url: str) -> tuple[socket.socket, float]:
    """Send a request and never read; the caller closes the socket. And when."""
    sock, request = _request(url)
    sock.sendall(request)
    return sock, time.monotonic()


def _local_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not host.startswith("127."):
        raise ValueError(f"the bench only talks to 127.0.0.1, not {host!r}")
