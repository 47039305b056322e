"""What a run produced: measurements of contenders, saved as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .stats import Ratio, Series


@dataclass
class Measurement:
    """One table of the issue: several contenders measured round by round."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    baseline: str | None = None
    contenders: dict[str, Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def series(self, name: str) -> Series:
        return self.contenders.setdefault(name, Series())

    def ratio(self, name: str, reference: str | None = None) -> Ratio | None:
        reference = reference or self.baseline
        if reference is None or name not in self.contenders or reference not in self.contenders:
            return None
        return Ratio.of(self.contenders[name], self.contenders[reference])

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "contenders": {name: s.to_json() for name, s in self.contenders.items()},
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        contenders = {n: Series.from_json(s) for n, s in data["contenders"].items()}
        return cls(
            data["key"],
            data["title"],
            data["unit"],
            data["higher_is_better"],
            data.get("baseline"),
            contenders,
            list(data.get("notes", [])),
        )


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements[measurement.key] = measurement
        return measurement

    def save(self, path: str) -> None:
        data = {
            "machine": self.machine,
            "settings": self.settings,
            "measurements": [m.to_json() for m in self.measurements.values()],
            "failed": self.failed,
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> Results:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        results = cls(dict(data["machine"]), dict(data["settings"]))
        results.failed = list(data.get("failed", []))
        for m in data["measurements"]:
            results.add(Measurement.from_json(m))
        return results
