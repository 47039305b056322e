"""The issue's targets, and the verdict a run gives on each.

Ratio targets are judged on the median of paired per-round ratios. Bound
targets (memory growth, time to release a file) are promises about every
transfer, so they are judged on the worst run. Nothing here is tuned to a
result: the thresholds are the issue's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .apps import IDLE_TIMEOUT
from .results import Results

MET, MISSED, UNMEASURED = "met", "MISSED", "not measured"


@dataclass(frozen=True)
class Target:
    label: str
    measurement: str
    contender: str
    #: Ratio target: contender ÷ reference (same round) must be >= minimum.
    reference: str | None = None
    minimum: float | None = None
    #: Bound target: the worst run must be <= (or < when strict) maximum.
    maximum: float | None = None
    strict: bool = False


TARGETS = [
    Target("FileStream >= 0.95x raw file_wrapper", "download", "file_stream", "raw", 0.95),
    Target("Tee to discard >= 0.90x no tee", "download", "tee_discard", "file_stream", 0.90),
    Target("Static in-process >= 1.0x WhiteNoise", "inprocess", "static", "whitenoise", 1.0),
    Target("RSS growth < 8 MiB (1 GiB, tee)", "rss", "tee_slow", maximum=8.0, strict=True),
    Target("abort-to-release <= 100 ms", "abort", "slow_wsgipipe", maximum=0.100),
    Target(
        f"stalled reader released <= idle timeout + 1 s ({IDLE_TIMEOUT + 1:g} s)",
        "stall",
        "idle_wsgipipe",
        maximum=IDLE_TIMEOUT + 1.0,
    ),
    Target(
        "offload worker: small-request p99 <= 50 ms at 1,000 slow readers",
        "capacity",
        "offload@1000",
        maximum=0.050,
    ),
]


@dataclass(frozen=True)
class Verdict:
    target: Target
    status: str
    figure: str


def judge(target: Target, results: Results) -> Verdict:
    measurement = results.measurements.get(target.measurement)
    series = measurement.contenders.get(target.contender) if measurement else None
    if measurement is None or series is None or not series.done():
        return Verdict(target, UNMEASURED, series.note if series else "")
    if target.reference is not None and target.minimum is not None:
        ratio = measurement.ratio(target.contender, target.reference)
        if ratio is None:
            return Verdict(target, UNMEASURED, "no baseline in the same rounds")
        status = MET if ratio.median >= target.minimum else MISSED
        figure = f"{ratio.median:.3f}x (runs {ratio.low:.3f}-{ratio.high:.3f})"
        return Verdict(target, status, figure)
    worst = max(series.done())
    assert target.maximum is not None
    ok = worst < target.maximum if target.strict else worst <= target.maximum
    figure = f"worst {worst:.3g} {measurement.unit} (median {series.median:.3g})"
    if len(series.done()) < len(series.values):
        ok, figure = False, figure + "; some runs failed"
    return Verdict(target, MET if ok else MISSED, figure)


def judge_all(results: Results) -> list[Verdict]:
    return [judge(t, results) for t in TARGETS]
