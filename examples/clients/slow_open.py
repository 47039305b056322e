"""Slow open: send the request head but hold back the blank line that ends it.

    python -m examples.clients.slow_open http://127.0.0.1:8000/index.html --pause 3

The server cannot start the response until the request is complete; meanwhile
(under gthread) other clients are served as usual.
"""

from __future__ import annotations

import argparse
import time

from ._http import connect, log, read_head, request


def run(url: str, pause: float = 3.0) -> tuple[int, bytes]:
    """Returns the status and the body."""
    head_bytes = request(url)[:-2]  # everything but the final CRLF
    with connect(url, send=False) as sock:
        sock.sendall(head_bytes)
        log(f"sent the request head without its final blank line; waiting {pause:g} s")
        time.sleep(pause)
        sock.sendall(b"\r\n")
        log("request complete")
        head = read_head(sock)
        body = head.rest
        while head.length is None or len(body) < head.length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    log(f"{head.status}: {len(body)} bytes")
    return head.status, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--pause", type=float, default=3.0)
    args = parser.parse_args()
    run(args.url, args.pause)


if __name__ == "__main__":
    main()
