"""The ``curl --limit-rate 1k`` walkthrough: a slow download, then Ctrl-C.

    python -m examples.clients.limit_rate http://127.0.0.1:8000/big.html --seconds 3

Runs curl reading at 1 KiB/s and sends it SIGINT (what Ctrl-C does) after
``--seconds``. Try it against ``/limit/big.html?rate=1k`` too, where the
server does the limiting.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ._http import log


def run(url: str, seconds: float = 3.0, rate: str = "1k") -> int:
    """Returns how many bytes curl saved before it was interrupted."""
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "download"
        log(f"curl --limit-rate {rate} {url}")
        proc = subprocess.Popen(
            [curl, "-sSN", "--limit-rate", rate, "-o", str(out), url],
            # A shell that starts us in the background leaves SIGINT ignored,
            # and curl would inherit that; Ctrl-C must work as in a terminal.
            preexec_fn=_default_sigint,
        )
        try:
            time.sleep(seconds)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        saved = out.stat().st_size if out.exists() else 0
    log(f"Ctrl-C after {seconds:g} s: curl exited with {code}, {saved} bytes saved")
    return saved


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", default="1k")
    args = parser.parse_args()
    run(args.url, args.seconds, args.rate)


if __name__ == "__main__":
    main()
