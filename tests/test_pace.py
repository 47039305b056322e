"""The pace policy in-process: the pure checker, then the middleware and its configuration."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from wsgipipe import DEFAULT_IDLE_TIMEOUT, IdleTimeout, MinRate, folder_app, stack, static_app
from wsgipipe.__main__ import main, parser
from wsgipipe._errors import ConfigurationError
from wsgipipe._idle_timeout import _Paced, min_rate_from
from wsgipipe._pace import (
    DEFAULT_GRACE,
    DEFAULT_MIN_RATE,
    MIN_RATE_REASON,
    PACE_KEY,
    Pace,
    Progress,
    idle_reason,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


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


def test_check_interval_is_a_quarter_of_the_shortest_limit_within_10ms_and_1s() -> None:
    assert Pace(idle_timeout=30, min_rate=240, grace=5).check_interval() == 1.0
    assert Pace(idle_timeout=2).check_interval() == 0.5
    assert Pace(idle_timeout=0.2).check_interval() == pytest.approx(0.05)
    assert Pace(idle_timeout=30, min_rate=240, grace=0.4).check_interval() == pytest.approx(0.1)
    assert Pace(idle_timeout=30, grace=0.4).check_interval() == 1.0  # no floor: grace unused
    assert Pace(min_rate=240, grace=0).check_interval() == 1.0
    assert Pace(idle_timeout=0.001).check_interval() == 0.01


def test_pace_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Pace().min_rate = 5  # type: ignore[misc]


# -- the middleware, the stack, the CLI and the example app ------------------


def body_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def paced_layer(app: object) -> _Paced | None:
    """The IdleTimeout/MinRate layer inside a stack, following ``.app``."""
    while app is not None and not isinstance(app, _Paced):
        app = getattr(app, "app", None)
    return app


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1k", 1024.0), ("240", 240.0), (240, 240.0), ("2.5k", 2560.0), (" 1k ", 1024.0)]
    + [(off, None) for off in ("0", "", "off", 0, 0.0, None)],
)
def test_min_rate_from(text: str | float | None, expected: float | None) -> None:
    assert min_rate_from(text) == expected


@pytest.mark.parametrize("bad", ["fast", "-5", "1x", "0.5"])
def test_min_rate_from_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        min_rate_from(bad)


@pytest.mark.parametrize("bad", [0, "0", "slow", -1])
def test_min_rate_middleware_needs_a_floor(bad: str | float) -> None:
    with pytest.raises(ConfigurationError):
        MinRate(body_app, bad)


def test_min_rate_middleware_defaults_to_kestrels_policy() -> None:
    layer = MinRate(body_app)
    assert layer.pace == Pace(idle_timeout=None, min_rate=240, grace=5)
    assert IdleTimeout(body_app, 30, min_rate="1k", grace=2).pace == Pace(30, 1024, 2)


@pytest.mark.parametrize(
    ("idle", "floor", "expected"),
    [
        (30, 240, Pace(30, 240, 5)),
        (30, "1k", Pace(30, 1024, 5)),
        (30, 0, Pace(30, None, 5)),
        (0, 240, Pace(None, 240, 5)),
        (0, "0", None),
    ],
)
def test_stack_builds_the_pace(
    tmp_path: Path, idle: float, floor: str | float, expected: Pace | None
) -> None:
    layer = paced_layer(stack(static_app(tmp_path), idle_timeout=idle, min_rate=floor))
    assert (layer.pace if layer is not None else None) == expected


def test_stack_default_has_the_min_rate(tmp_path: Path) -> None:
    layer = paced_layer(folder_app(tmp_path))
    assert layer is not None
    assert layer.pace == Pace(DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_RATE, DEFAULT_GRACE)


def test_the_deployment_pace_is_told_to_the_server_and_a_response_may_replace_it() -> None:
    seen: list[object] = []
    own = Pace(idle_timeout=60)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/own":
            environ[PACE_KEY] = own
        seen.append(environ)
        return body_app(environ, start_response)

    client = TestApp(IdleTimeout(app, 30, min_rate=240), lint=True)
    assert client.get("/").body == b"ok"
    assert client.get("/own").body == b"ok"
    first, second = seen
    assert first[PACE_KEY] == Pace(30, 240, 5)  # type: ignore[index]
    assert second[PACE_KEY] is own  # type: ignore[index]


def test_cli_min_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parser().parse_args(["serve", "."]).min_rate == "240"
    assert parser().parse_args(["serve", ".", "--min-rate", "1k"]).min_rate == "1k"
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path), "--min-rate", "fast"])
    assert info.value.code == 2
    assert "not a rate" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "floor"), [("1k", 1024.0), ("240", 240.0), ("0", None)])
def test_example_app_reads_wsgipipe_min_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, floor: float | None
) -> None:
    from examples.app import build

    monkeypatch.setenv("WSGIPIPE_MIN_RATE", value)
    tmp_path.chmod(0o555)  # build() writes no big files into a read-only root
    try:
        layer = paced_layer(build(tmp_path))
    finally:
        tmp_path.chmod(0o755)
    assert layer is not None
    assert layer.pace.min_rate == floor
