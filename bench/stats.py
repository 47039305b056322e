"""Figures from several runs: medians, min-max, and ratios paired by round.

A ratio is the median of per-round ratios (contender ÷ baseline measured in
the same round), not a ratio of medians: pairing cancels the drift that a
shared machine adds between rounds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """One contender's values in one measurement, one slot per round.

    A round the contender could not complete holds None.
    """

    values: list[float | None] = field(default_factory=list)
    note: str = ""
    extra: dict[str, list[float | None]] = field(default_factory=dict)

    def done(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def median(self) -> float | None:
        done = self.done()
        return statistics.median(done) if done else None

    @property
    def low(self) -> float | None:
        done = self.done()
        return min(done) if done else None

    @property
    def high(self) -> float | None:
        done = self.done()
        return max(done) if done else None

    def extra_median(self, key: str) -> float | None:
        done = [v for v in self.extra.get(key, []) if v is not None]
        return statistics.median(done) if done else None

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "note": self.note, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Series:
        return cls(list(data["values"]), data.get("note", ""), dict(data.get("extra", {})))


def paired_ratios(series: Series, baseline: Series) -> list[float]:
    """``series / baseline`` for every round where both have a non-zero value."""
    pairs = zip(series.values, baseline.values, strict=False)
    return [v / b for v, b in pairs if v is not None and b]


@dataclass(frozen=True)
class Ratio:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, series: Series, baseline: Series) -> Ratio | None:
        ratios = paired_ratios(series, baseline)
        if not ratios:
            return None
        return cls(statistics.median(ratios), min(ratios), max(ratios))
