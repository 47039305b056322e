"""Slow reader: read a large file in 64 KiB bites with a 200 ms pause between them.

    python -m examples.clients.slow_reader http://127.0.0.1:8000/big.bin --seconds 5

A reader this slow keeps making progress, so an idle timeout must not cut it.
It stops (closing the connection) after ``--seconds`` or at the end.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from ._http import connect, log, read_head


@dataclass
class Result:
    status: int
    got: int
    complete: bool
    cut: bool  # the server closed the connection before the end


def run(url: str, seconds: float = 5.0, pause: float = 0.2, bite: int = 65536) -> Result:
    log(f"GET {url}, reading {bite} bytes every {pause * 1000:.0f} ms for up to {seconds:g} s")
    deadline = time.monotonic() + seconds
    cut = False
    with connect(url) as sock:
        head = read_head(sock)
        got = len(head.rest)
        while head.length is None or got < head.length:
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            try:
                data = sock.recv(bite)
            except ConnectionResetError:
                data = b""
            if not data:
                cut = True
                break
            got += len(data)
    complete = head.length is not None and got >= head.length
    ending = "complete" if complete else ("cut off by the server" if cut else "stopping")
    log(f"{head.status}: read {got} of {head.length} bytes, {ending}")
    return Result(head.status, got, complete, cut)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.2)
    args = parser.parse_args()
    run(args.url, args.seconds, args.pause)


if __name__ == "__main__":
    main()
