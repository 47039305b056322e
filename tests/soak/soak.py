"""Soak: the example app under load, aborts and stalled readers (``make soak``).

Starts ``gunicorn examples.app:app`` with the project's gunicorn.conf.py
(gthread, 2 workers x 8 threads, idle timeout 2 s) on a scratch root, warms it
up, records each worker's descriptor count and RSS, then for ``SOAK_SECONDS``
(60) runs at the same time:

* 64 keep-alive client connections in a loop over a mix of requests (small
  and medium files, ranges, HEAD, 304, 404), checking every status and body;
* 200 aborted downloads of a 64 MiB file (after 64 KiB, before the first
  byte, with a reset, in the middle of a range), spread over the run;
* 20 stalled readers that take 1 KiB of the 64 MiB file and then read
  nothing for 5 s, so the idle timeout must cut them off.

Then it waits (at most 30 s) for every worker's descriptor count to return to
its starting value and checks RSS, and fails on any error that was not an
intended abort. Everything is bounded: socket timeouts, a fixed number of
aborts and stalls, a deadline for the whole run. Prints a JSON summary.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wsgipipe.testing import GunicornServer, raw_request, transfer_lines, wait_until

REPO = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "64"))
ABORTS = 200
STALLS = 20
STALL_SECONDS = 5.0
IDLE_TIMEOUT = 2
#: RSS may settle a little above the warm baseline (allocator arenas); more
#: than this per worker is reported as growth.
RSS_SLACK = 8 * 1024 * 1024
SMALL = os.urandom(1024)
MEDIUM = os.urandom(256 * 1024)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] += 1

    def error(self, message: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(message)
            self.requests["error"] += 1


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="wsgipipe-soak-"))
    (root / "small.bin").write_bytes(SMALL)
    (root / "medium.bin").write_bytes(MEDIUM)
    shutil.copy(REPO / "examples" / "public" / "index.html", root / "index.html")
    return root


# -- the load ----------------------------------------------------------------

MIX = [
    ("small", "GET", "/small.bin", {}, 200, SMALL),
    ("medium", "GET", "/medium.bin", {}, 200, MEDIUM),
    ("range", "GET", "/medium.bin", {"Range": "bytes=1000-1999"}, 206, MEDIUM[1000:2000]),
    ("head", "HEAD", "/medium.bin", {}, 200, b""),
    ("missing", "GET", "/no-such-file", {}, 404, None),
    ("traversal", "GET", "/..%2fetc/passwd", {}, 404, None),
]


def one_request(conn: http.client.HTTPConnection, tally: Tally, etags: dict[str, str]) -> None:
    kind, method, path, headers, status, body = random.choice(MIX)
    if kind == "small" and "small" in etags and random.random() < 0.3:
        kind, headers, status, body = "304", {"If-None-Match": etags["small"]}, 304, b""
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != status or (body is not None and data != body):
        tally.error(f"{kind}: {response.status} with {len(data)} bytes")
        return
    if kind == "small" and response.getheader("ETag"):
        etags["small"] = response.getheader("ETag") or ""
    tally.ok(kind)


def load_client(port: int, until: float, tally: Tally) -> None:
    etags: dict[str, str] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < until:
        try:
            one_request(conn, tally, etags)
        except (OSError, http.client.HTTPException) as exc:
            # keep-alive closed by the server between requests is normal HTTP;
            # anything else is an error.
            if not isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError)):
                tally.error(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()


# -- aborts and stalls ------------------------------------------------------------


def abort_once(port: int, n: int) -> None:
    style = n % 4
    headers = {"Range": "bytes=1000000-40000000"} if style == 3 else {}
    sock = raw_request(port, "/big.bin", headers=headers)
    try:
        if style == 1:
            return  # gone before the first byte
        received = 0
        while received < 64 * 1024:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
        if style == 2:  # a reset instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def stall_once(port: int, delay: float) -> None:
    time.sleep(delay)  # the stalls are spread over the run
    sock = raw_request(port, "/big.bin")
    try:
        sock.recv(1024)
        time.sleep(STALL_SECONDS)  # read nothing: the idle timeout must fire
    finally:
        sock.close()


def spread(count: int, seconds: float, action: object, tally: Tally, kind: str) -> None:
    assert callable(action)
    for n in range(count):
        started = time.monotonic()
        try:
            action(n)
            tally.ok(kind)
        except OSError as exc:
            tally.error(f"{kind}: {type(exc).__name__}: {exc}")
        time.sleep(max(0.0, seconds / count - (time.monotonic() - started)))


def stalled(port: int, delay: float, tally: Tally) -> None:
    try:
        stall_once(port, delay)
        tally.ok("stall")
    except OSError as exc:
        tally.error(f"stall: {type(exc).__name__}: {exc}")


# -- what we measure ---------------------------------------------------------------


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


def snapshot(server: GunicornServer) -> dict[int, tuple[int, int]]:
    return {pid: (count, rss(pid)) for pid, count in server.fd_counts().items()}


def descriptors(server: GunicornServer) -> dict[str, list[str]]:
    """What each worker has open, for the report when counts differ."""
    found: dict[str, list[str]] = {}
    for pid in server.worker_pids():
        fd_dir = Path(f"/proc/{pid}/fd")
        found[str(pid)] = sorted(
            f"{fd.name}->{os.readlink(fd)}" for fd in fd_dir.iterdir() if fd.is_symlink()
        )
    return found


def warm_up(port: int, tally: Tally) -> None:
    until = time.monotonic() + 5
    threads = [threading.Thread(target=load_client, args=(port, until, tally)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for n in range(8):
        abort_once(port, n)
    for thread in threads:
        thread.join(30)


def run() -> dict[str, object]:
    root = make_root()
    env = {"WSGIPIPE_ROOT": str(root), "WSGIPIPE_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}
    server = GunicornServer(
        "examples.app:app",
        workers=2,
        threads=8,
        cwd=REPO,
        env=env,
        config="gunicorn.conf.py",
        startup_timeout=60,
    )
    tally = Tally()
    try:
        with server:
            warm_up(server.port, tally)
            time.sleep(IDLE_TIMEOUT + 1)
            before = snapshot(server)
            open_before = descriptors(server)
            warm_errors = tally.requests["error"]
            started = time.monotonic()
            until = started + SECONDS
            workers = [
                threading.Thread(target=load_client, args=(server.port, until, tally))
                for _ in range(CONNECTIONS)
            ]
            workers.append(
                threading.Thread(
                    target=spread,
                    args=(ABORTS, SECONDS, lambda n: abort_once(server.port, n), tally, "abort"),
                )
            )
            workers += [
                threading.Thread(
                    target=stalled, args=(server.port, i * SECONDS * 0.8 / STALLS, tally)
                )
                for i in range(STALLS)
            ]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join(SECONDS + 60)
            elapsed = time.monotonic() - started
            back = wait_until(
                lambda: (
                    {p: c for p, (c, _) in snapshot(server).items()}
                    == {p: c for p, (c, _) in before.items()}
                ),
                30,
                0.2,
            )
            after = snapshot(server)
            open_after = descriptors(server)
            log = server.log
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = report(tally, before, after, back, elapsed, log, warm_errors)
    if not back:
        summary["open_before"], summary["open_after"] = open_before, open_after
    return summary


def report(
    tally: Tally,
    before: dict[int, tuple[int, int]],
    after: dict[int, tuple[int, int]],
    back: bool,
    elapsed: float,
    log: str,
    warm_errors: int,
) -> dict[str, object]:
    lines = [line for method in ("GET", "HEAD") for line in transfer_lines(log, method=method)]
    outcomes = Counter(line.split(" ", 4)[3] for line in lines)
    idle_cuts = len(re.findall(r"reason='idle timeout", log))
    served = sum(v for k, v in tally.requests.items() if k not in ("error", "abort", "stall"))
    rss_growth = {
        str(pid): after.get(pid, (0, 0))[1] - before[pid][1] for pid in before if pid in after
    }
    problems = list(tally.errors)
    if tally.requests["error"] or warm_errors:
        problems.append(f"{tally.requests['error']} client errors")
    if set(after) != set(before):
        problems.append(f"workers changed: {sorted(before)} -> {sorted(after)}")
    if not back:
        problems.append("descriptor counts did not return to the baseline within 30 s")
    if any(growth > RSS_SLACK for growth in rss_growth.values()):
        problems.append(f"RSS grew by more than {RSS_SLACK} bytes")
    if outcomes["failed"]:
        problems.append(f"{outcomes['failed']} transfers failed")
    if "Traceback" in log:
        problems.append("a traceback in the server log")
    if idle_cuts < STALLS:
        problems.append(f"only {idle_cuts} of {STALLS} stalled readers were cut off")
    return {
        "seconds": round(elapsed, 1),
        "connections": CONNECTIONS,
        "requests_checked": served,
        "requests_per_second": round(served / elapsed),
        "by_kind": dict(tally.requests),
        "transfer_outcomes": dict(outcomes),
        "idle_timeouts": idle_cuts,
        "fds_before": {str(p): c for p, (c, _) in before.items()},
        "fds_after": {str(p): c for p, (c, _) in after.items()},
        "rss_before_mib": {str(p): round(r / 2**20, 1) for p, (_, r) in before.items()},
        "rss_after_mib": {str(p): round(r / 2**20, 1) for p, (_, r) in after.items()},
        "rss_growth_mib": {p: round(g / 2**20, 1) for p, g in rss_growth.items()},
        "problems": problems,
    }


def main() -> int:
    summary = run()
    print(json.dumps(summary, indent=2))
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
