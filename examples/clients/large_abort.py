"""Large abort: download a big file at full speed and give up part way.

python -m examples.clients.large_abort http://127.0.0.1:8000/big.bin --after 8000000
"""

from __future__ import annotations

import argparse

from ._http import connect, log, read_head


def run(url: str, after: int = 8 * 1024 * 1024) -> int:
    """Returns how many body bytes were read before closing."""
    log(f"GET {url}")
    with connect(url) as sock:
        head = read_head(sock)
        got = len(head.rest)
        while got < after:
            data = sock.recv(min(1 << 20, after - got))
            if not data:
                break
            got += len(data)
        log(f"{head.status}, Content-Length {head.length}; aborting after {got} bytes")
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--after", type=int, default=8 * 1024 * 1024, help="bytes before abort")
    args = parser.parse_args()
    run(args.url, args.after)


if __name__ == "__main__":
    main()
