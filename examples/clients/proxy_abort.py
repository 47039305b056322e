"""Proxy abort: leave a proxied download part way and watch the upstream's own log say so.

Start an upstream and a proxy in front of it (two instances of the example app):

    gunicorn -c gunicorn.conf.py -b 127.0.0.1:8001 examples.app:app 2> upstream.log
    WSGIPIPE_UPSTREAM=http://127.0.0.1:8001 gunicorn -c gunicorn.conf.py examples.app:app

then:

    python -m examples.clients.proxy_abort http://127.0.0.1:8000/proxy/big.bin \\
        --upstream-log upstream.log

The client reads 1 MiB through the proxy, closes the connection, and waits
for the upstream's transfer line for the same path: ``aborted``, well within
a second, because the proxy closed its upstream connection when its own
client left (it does not read the rest of the body into a pool).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from urllib.parse import urlsplit

from . import large_abort
from ._http import elapsed, log


def run(url: str, upstream_log: str, after: int = 1024 * 1024, timeout: float = 5.0) -> str | None:
    """Returns the upstream's new transfer line for the path, or None if none came."""
    upstream_path = "/" + urlsplit(url).path.split("/", 2)[-1]  # /proxy/x -> /x
    seen = _lines(upstream_log, upstream_path)
    large_abort.run(url, after)  # read ``after`` bytes through the proxy, then close
    left = elapsed()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _lines(upstream_log, upstream_path)
        if len(lines) > len(seen):
            log(f"upstream, {elapsed() - left:.2f}s after the abort: {lines[-1]}")
            return lines[-1]
        time.sleep(0.02)
    log(f"no upstream transfer line for {upstream_path} within {timeout:g}s")
    return None


def _lines(path: str, target: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    pattern = rf"\bGET {re.escape(target)} \d{{3}} (?:finished|aborted|failed) .*"
    return re.findall(pattern, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a /proxy/<path> URL of the downstream app")
    parser.add_argument("--upstream-log", required=True, help="the upstream server's log file")
    parser.add_argument("--after", type=int, default=1024 * 1024, help="bytes before abort")
    args = parser.parse_args()
    line = run(args.url, args.upstream_log, args.after)
    raise SystemExit(0 if line is not None and " aborted " in line else 1)


if __name__ == "__main__":
    main()
