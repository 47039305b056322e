"""Stalled reader: send the request, then read nothing at all for a while.

    python -m examples.clients.stalled http://127.0.0.1:8000/big.bin --seconds 35

Without an idle timeout the server holds the file and a worker thread for as
long as the client waits. With one, the server gives up; when the client
finally reads it gets what was in the socket buffers and then the end.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from ._http import connect, log, read_head


@dataclass
class Result:
    status: int
    length: int | None
    got: int


def run(url: str, seconds: float = 35.0) -> Result:
    log(f"GET {url}, then not reading for {seconds:g} s")
    with connect(url, rcvbuf=64 * 1024) as sock:
        time.sleep(seconds)
        log("reading what is there")
        head = read_head(sock)
        got = len(head.rest)
        sock.settimeout(5)
        try:
            while data := sock.recv(1 << 20):
                got += len(data)
        except (TimeoutError, ConnectionResetError):
            pass
    complete = head.length is not None and got >= head.length
    log(f"{head.status}: got {got} of {head.length} bytes ({'complete' if complete else 'cut'})")
    return Result(head.status, head.length, got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=35.0)
    args = parser.parse_args()
    run(args.url, args.seconds)


if __name__ == "__main__":
    main()
