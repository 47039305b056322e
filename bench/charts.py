"""PNG charts (matplotlib): median bars with min-max whiskers, by contender."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .common import LABELS, say
from .results import Measurement, Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch


def draw(results: Results, directory: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no charts (pip install -e '.[bench]')")
        return []
    written = []
    download = results.measurements.get("download")
    if download is not None:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        _bars(ax, download, "GB/s (higher is better)")
        written.append(_save(fig, directory, "throughput.png"))
    panels = [results.measurements.get(k) for k in ("inprocess", "requests")]
    shown = [m for m in panels if m is not None]
    if shown:
        fig, axes = plt.subplots(len(shown), 1, figsize=(8, 3.4 * len(shown)), squeeze=False)
        for ax, m in zip(axes[:, 0], shown, strict=True):
            _bars(ax, m, "requests/s (higher is better)")
        written.append(_save(fig, directory, "requests.png"))
    return written


def _bars(ax: Axes, m: Measurement, xlabel: str) -> None:
    names = [n for n, s in m.contenders.items() if s.median is not None]
    medians = [m.contenders[n].median or 0.0 for n in names]
    lows = [med - (m.contenders[n].low or med) for n, med in zip(names, medians, strict=True)]
    highs = [(m.contenders[n].high or med) - med for n, med in zip(names, medians, strict=True)]
    colors = [_color(n, m.baseline) for n in names]
    y = range(len(names))
    ax.barh(y, medians, xerr=[lows, highs], color=colors, capsize=3)
    # Below the bars, so it never hides one.
    ax.legend(
        handles=_legend(), fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16)
    )
    # The median goes in the label: nginx's bar can dwarf the others.
    values = [f"{v:,.0f}" if v >= 100 else f"{v:.2f}" for v in medians]
    labels = [f"{LABELS.get(n, n)}  {v}" for n, v in zip(names, values, strict=True)]
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(m.title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)


_BASELINE, _WSGIPIPE, _OTHER = "#1b9e77", "#d95f02", "#7570b3"


def _color(name: str, baseline: str | None) -> str:
    if name == baseline:
        return _BASELINE
    return _WSGIPIPE if LABELS.get(name, "").startswith(("wsgipipe", "FileStream")) else _OTHER


def _legend() -> list[Patch]:
    from matplotlib.patches import Patch

    return [
        Patch(color=_BASELINE, label="baseline of the ratios"),
        Patch(color=_WSGIPIPE, label="wsgipipe"),
        Patch(color=_OTHER, label="others; whiskers: min - max"),
    ]


def _save(fig: Figure, directory: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
