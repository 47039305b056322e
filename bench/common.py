"""What every section shares: settings, the data files, names, round order."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

BIG = "big.bin"
SMALL = "small.txt"
GIB = 1 << 30
SMALL_SIZE = 1024

#: How each contender is shown in tables and charts.
LABELS = {
    "raw": "gunicorn raw wsgi.file_wrapper",
    "file_stream": "wsgipipe FileStream",
    "tee_discard": "FileStream + Tee(discard)",
    "tee_sha256": "FileStream + Tee(sha256)",
    "generator": "naive 64 KiB generator",
    "send_file": "werkzeug send_file",
    "whitenoise": "WhiteNoise",
    "shared_data": "werkzeug SharedDataMiddleware",
    "static": "wsgipipe Static",
    "nginx": "nginx (ceiling)",
    "tee_slow": "wsgipipe Tee to a slow sink",
    "buffer_log": "naive buffering body logger",
    "slow_wsgipipe": "wsgipipe slow through",
    "slow_generator": "plain generator with sleep",
    "idle_wsgipipe": "wsgipipe idle timeout (gthread)",
    "raw_gthread": "plain gunicorn gthread",
    "raw_sync": "plain gunicorn sync",
}


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure; ``quick()`` is the short variant."""

    runs: int = 7
    slow_runs: int = 3
    inprocess_seconds: float = 1.0
    wrk_seconds: float = 3.0
    big_size: int = GIB
    data: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "data")
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: object) -> Settings:
        base: dict[str, object] = {"runs": 3, "slow_runs": 1}
        base.update(inprocess_seconds=0.3, wrk_seconds=1.0)
        base.update(overrides)
        return cls(quick=True, **base)  # type: ignore[arg-type]


def rounds(names: Sequence[T], count: int) -> Iterator[tuple[int, list[T]]]:
    """``count`` rounds of every contender, each round starting one further on.

    Rotating the order means no contender always runs first (cold) or right
    after the same neighbour, so slow drift spreads evenly.
    """
    items = list(names)
    for r in range(count):
        k = r % len(items) if items else 0
        yield r, items[k:] + items[:k]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_data(settings: Settings) -> None:
    """The 1 GiB file and the 1 KiB file, made once and reused; then cached."""
    os.makedirs(settings.data, exist_ok=True)
    small = os.path.join(settings.data, SMALL)
    if not os.path.exists(small) or os.path.getsize(small) != SMALL_SIZE:
        with open(small, "wb") as f:
            f.write((b"wsgipipe bench " * 100)[: SMALL_SIZE - 1] + b"\n")
    big = os.path.join(settings.data, BIG)
    if not os.path.exists(big) or os.path.getsize(big) != settings.big_size:
        say(f"writing {settings.big_size} bytes to {big}")
        block = os.urandom(1 << 20)  # real data: no sparse holes for sendfile to skip
        with open(big, "wb") as f:
            for _ in range(settings.big_size >> 20):
                f.write(block)
            f.write(block[: settings.big_size & ((1 << 20) - 1)])
    with open(big, "rb") as f:  # warm the page cache so run 1 is not a disk benchmark
        while f.read(1 << 22):
            pass
