"""``python -m bench``: run the measurements, write the table and charts, check targets.

python -m bench                 full run, writes bench/results.md and the charts
python -m bench --quick         shorter run, writes bench/out/quick/
python -m bench --quick --check exit 1 if a measured target is missed
python -m bench --check-only bench/results.json   judge a saved run, measure nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from . import (
    capacity,
    inprocess,
    machine,
    observability,
    offload,
    release,
    report,
    sources,
    throughput,
    wrapping,
)
from .common import Settings, prepare_data, say
from .results import Measurement, Results
from .targets import MET, MISSED, UNMEASURED, judge_all

HERE = os.path.dirname(os.path.abspath(__file__))

#: Section name -> what measures it, in the order of the issue's table.
SECTIONS: dict[str, Callable[[Settings], Measurement]] = {
    "download": throughput.measure_download,
    "inprocess": inprocess.measure,
    "requests": throughput.measure_requests,
    "rss": release.measure_rss,
    "abort": release.measure_abort,
    "stall": release.measure_stall,
    "capacity": capacity.measure,
    "offload": offload.measure,
    "wrapping": wrapping.measure,
    "obs_throughput": observability.measure_throughput,
    "obs_request": observability.measure_requests,
    "sources": sources.measure,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="Run wsgipipe's benchmarks.")
    p.add_argument("--quick", action="store_true", help="fewer and shorter runs (about 2 min)")
    p.add_argument("--runs", type=int, help="rounds for the throughput and req/s sections")
    p.add_argument("--slow-runs", type=int, help="rounds for the memory and release sections")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--out", help="where results.md/.json and charts go")
    p.add_argument("--check", action="store_true", help="exit 1 if a measured target is missed")
    p.add_argument("--strict", action="store_true", help="with --check: unmeasured fails too")
    p.add_argument("--check-only", metavar="RESULTS_JSON", help="judge a saved run only")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.runs:
        overrides["runs"] = args.runs
    if args.slow_runs:
        overrides["slow_runs"] = args.slow_runs
    if args.quick:
        return Settings.quick_run(**overrides)
    return Settings(**overrides)  # type: ignore[arg-type]


def measure(settings: Settings, only: Sequence[str] | None) -> Results:
    results = Results(machine.describe())
    results.settings = {
        "mode": "quick" if settings.quick else "full",
        "rounds (throughput, req/s)": settings.runs,
        "rounds (memory, release)": settings.slow_runs,
        "seconds per in-process run": settings.inprocess_seconds,
        "seconds per wrk run": settings.wrk_seconds,
        "big file": f"{settings.big_size} bytes",
    }
    prepare_data(settings)
    started = time.monotonic()
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        say(f"== {name}")
        try:
            results.add(section(settings))
        except Exception:
            # One broken section must not throw away the others' figures.
            traceback.print_exc()
            results.failed.append(name)
    results.machine["load average at end (1/5/15 min)"] = machine.load_average()
    results.settings["wall time"] = f"{time.monotonic() - started:.0f} s"
    return results


def check(results: Results, strict: bool) -> int:
    failed = False
    for v in judge_all(results):
        say(f"  [{v.status}] {v.target.label}: {v.figure}")
        failed |= v.status == MISSED or (strict and v.status == UNMEASURED)
    say("targets: " + ("some missed" if failed else f"all measured ones {MET}"))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.check_only:
        return check(Results.load(args.check_only), args.strict)
    settings = settings_from(args)
    out = args.out or (os.path.join(HERE, "out", "quick") if settings.quick else HERE)
    results = measure(settings, args.only)
    for path in report.write(results, out) + capacity.chart(results, out):
        say(f"wrote {os.path.relpath(path)}")
    status = check(results, args.strict)
    if results.failed:
        say(f"sections that failed: {', '.join(results.failed)}")
        return 2
    return status if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
