"""The pace policy in-process: idle timeout and minimum data rate as pure functions of time."""

from __future__ import annotations

import math

import pytest

from wsgipipe._errors import ConfigurationError
from wsgipipe._pace import (
    DEFAULT_GRACE,
    DEFAULT_MIN_RATE,
    MIN_RATE_REASON,
    PACE_KEY,
    Pace,
    Progress,
    idle_reason,
)


def feed(
    progress: Progress, rate: float, until: float, step: float = 0.25
) -> tuple[float, str | None]:
    """Acknowledge ``rate`` bytes/s from t=0 to ``until``; the first cut and when."""
    t = 0.0
    while t <= until:
        reason = progress.progress(1000 + int(rate * t), t)
        if reason is not None:
            return t, reason
        t += step
    return t, None


def test_defaults_are_kestrels() -> None:
    assert (DEFAULT_MIN_RATE, DEFAULT_GRACE) == (240.0, 5.0)
    assert PACE_KEY == "wsgipipe.pace"
    assert Pace().grace == 5.0 and not Pace().active


def test_reason_strings_are_exact() -> None:
    assert MIN_RATE_REASON == "min rate"
    assert idle_reason(30.0) == "idle timeout 30s"
    assert idle_reason(0.5) == "idle timeout 0.5s"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_rate": -1},
        {"idle_timeout": -0.1},
        {"min_rate": math.nan},
        {"idle_timeout": math.inf},
        {"grace": -1},
        {"grace": math.nan},
        {"min_rate": "240"},
        {"min_rate": True},
    ],
)
def test_bad_values_fail_when_built(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Pace(**kwargs)  # type: ignore[arg-type]


def test_zero_turns_a_limit_off() -> None:
    pace = Pace(idle_timeout=0, min_rate=0)
    assert (pace.idle_timeout, pace.min_rate, pace.active) == (None, None, False)
    assert feed(pace.progress(0.0), rate=0, until=600)[1] is None


def test_slow_reader_is_cut_for_min_rate_after_grace() -> None:
    pace = Pace(min_rate=240, grace=5)
    when, reason = feed(pace.progress(0.0), rate=100, until=60)
    assert reason == "min rate"
    # Deadline: 5 + 100 t / 240 < t  <=>  t > 8.57 s.
    assert 8.5 <= when <= 8.75


def test_reader_at_the_floor_or_above_is_never_cut() -> None:
    for rate in (240, 250, 10_000):
        assert feed(Pace(min_rate=240, grace=5).progress(0.0), rate=rate, until=600)[1] is None


def test_stalled_reader_is_cut_by_min_rate_at_the_grace_period() -> None:
    when, reason = feed(Pace(min_rate=240, grace=5).progress(0.0), rate=0, until=60)
    assert reason == "min rate"
    assert when == pytest.approx(5.25)


def test_a_fast_start_earns_slack() -> None:
    progress = Pace(min_rate=1000, grace=1).progress(0.0)
    assert progress.progress(0, 0.0) is None
    assert progress.progress(10_000, 1.0) is None  # 10 s worth of the floor
    assert progress.progress(10_000, 10.5) is None  # 1 s grace + 10 s earned
    assert progress.progress(10_000, 11.5) == "min rate"


def test_idle_timeout_counts_only_time_without_progress() -> None:
    progress = Pace(idle_timeout=3).progress(0.0)
    assert progress.progress(0, 0.0) is None
    assert progress.progress(0, 2.9) is None
    assert progress.progress(1, 5.0) is None  # moved: the clock restarts
    assert progress.progress(1, 7.9) is None
    assert progress.progress(1, 8.0) == "idle timeout 3s"


def test_idle_timeout_wins_over_min_rate_when_both_are_due() -> None:
    progress = Pace(idle_timeout=2, min_rate=240, grace=1).progress(0.0)
    assert progress.progress(0, 0.0) is None
    assert progress.progress(0, 2.0) == "idle timeout 2s"


def test_time_with_nothing_pending_is_not_the_clients_fault() -> None:
    pace = Pace(idle_timeout=3, min_rate=240, grace=5)
    progress = pace.progress(0.0)
    # A response slow to produce: nothing queued for 100 s, then acked at once.
    assert progress.progress(0, 100.0, pending=False) is None
    assert progress.progress(0, 102.0) is None
    assert progress.progress(0, 103.0) == "idle timeout 3s"
    assert progress.waited == pytest.approx(3.0)


def test_counter_growth_only_counts_from_the_first_value() -> None:
    progress = Pace(min_rate=100, grace=0).progress(0.0)
    assert progress.progress(5_000_000, 0.0) is None  # headers, earlier responses
    assert progress.progress(5_000_000, 1.0) == "min rate"


def test_check_interval_is_a_quarter_of_the_shortest_limit_clamped() -> None:
    assert Pace(idle_timeout=30).check_interval() == 0.25
    assert Pace(idle_timeout=0.2).check_interval() == pytest.approx(0.05)
    assert Pace(min_rate=240, grace=0.4).check_interval() == pytest.approx(0.1)
    assert Pace(min_rate=240, grace=0).check_interval() == 0.25
    assert Pace(idle_timeout=0.001).check_interval() == 0.01


def test_pace_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Pace().min_rate = 5  # type: ignore[misc]
