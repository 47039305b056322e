"""Control download: fetch a file completely, save it, compare it.

python -m examples.clients.control http://127.0.0.1:8000/big.bin --compare examples/public/big.bin
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ._http import log


@dataclass
class Result:
    status: int
    size: int
    sha256: str
    same: bool | None  # None when there was nothing to compare with


def run(url: str, dest: Path, compare: Path | None = None) -> Result:
    log(f"GET {url}")
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, 65536)
        status = response.status
    digest = _sha256(dest)
    same = None if compare is None else digest == _sha256(compare)
    log(f"{status}, saved {dest.stat().st_size} bytes to {dest}, sha256 {digest[:16]}…")
    if same is not None:
        log("identical to " + str(compare) if same else f"DIFFERENT from {compare}")
    return Result(status, dest.stat().st_size, digest, same)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--out", type=Path, help="where to save (default: a temporary file)")
    parser.add_argument("--compare", type=Path, help="local file the download must equal")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.url, args.out or Path(tmp) / "download", args.compare)
    raise SystemExit(0 if result.same is not False else 1)


if __name__ == "__main__":
    main()
