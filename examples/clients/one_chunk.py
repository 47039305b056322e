"""Read one chunk, then abort: the client leaves right after the first bytes.

python -m examples.clients.one_chunk http://127.0.0.1:8000/big.bin
"""

from __future__ import annotations

import argparse

from ._http import connect, log, read_head


def run(url: str, chunk: int = 65536) -> int:
    """Returns how many body bytes were read before closing."""
    log(f"GET {url}")
    with connect(url) as sock:
        head = read_head(sock)
        got = len(head.rest)
        while got < chunk:
            data = sock.recv(chunk - got)
            if not data:
                break
            got += len(data)
        log(f"{head.status}, Content-Length {head.length}; read {got} bytes, closing now")
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes to read first (65536)")
    args = parser.parse_args()
    run(args.url, args.chunk)


if __name__ == "__main__":
    main()
