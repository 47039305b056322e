"""The benchmark harness's logic (bench/), never its timings.

Speed is measured by ``make bench``; these tests pin down what the figures
mean (pairing, medians, verdicts), that every contender serves the right
bytes, and that the harness refuses to talk to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from webtest import TestApp

from bench import apps, capacity, clients
from bench.__main__ import main
from bench.common import SMALL, rounds
from bench.inprocess import base_environ, call
from bench.report import markdown
from bench.results import Measurement, Results
from bench.servers import Nginx, nginx_binary, tree
from bench.servers import gunicorn as bench_gunicorn
from bench.stats import Ratio, Series, paired_ratios
from bench.targets import MET, MISSED, TARGETS, UNMEASURED, judge, judge_all
from wsgipipe.testing import wait_until

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class TestStats:
    def test_median_and_range_skip_failed_rounds(self) -> None:
        s = Series([3.0, None, 1.0, 2.0])
        assert (s.median, s.low, s.high) == (2.0, 1.0, 3.0)
        assert s.done() == [3.0, 1.0, 2.0]

    def test_no_values_give_no_figures(self) -> None:
        s = Series([None])
        assert (s.median, s.low, s.high) == (None, None, None)

    def test_ratios_pair_values_of_the_same_round(self) -> None:
        contender = Series([2.0, 4.0, None, 9.0])
        baseline = Series([1.0, 8.0, 5.0, 3.0])
        assert paired_ratios(contender, baseline) == [2.0, 0.5, 3.0]
        assert Ratio.of(contender, baseline) == Ratio(2.0, 0.5, 3.0)

    def test_pairing_is_not_a_ratio_of_medians(self) -> None:
        # Drift doubles both between rounds; per-round pairing sees 1.0 each time.
        contender = Series([1.0, 2.0, 4.0])
        baseline = Series([1.0, 2.0, 4.0])
        assert Ratio.of(contender, baseline) == Ratio(1.0, 1.0, 1.0)
        assert Ratio.of(Series([None]), baseline) is None


def test_rounds_rotate_so_no_contender_always_goes_first() -> None:
    orders = [order for _, order in rounds(["a", "b", "c"], 4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


class TestTargets:
    def test_ratio_target_met_and_missed(self) -> None:
        target = next(t for t in TARGETS if t.contender == "file_stream")
        results = Results()
        m = results.add(Measurement("download", "d", "GB/s", True, "raw"))
        m.contenders["raw"] = Series([2.0, 2.0, 2.0])
        m.contenders["file_stream"] = Series([1.9, 2.0, 2.1])
        assert judge(target, results).status == MET  # median ratio 1.0
        m.contenders["file_stream"] = Series([1.8, 1.0, 2.1])
        verdict = judge(target, results)
        assert verdict.status == MISSED  # median 0.9 < 0.95
        assert "0.900x" in verdict.figure

    def test_bound_target_is_judged_on_the_worst_run(self) -> None:
        target = next(t for t in TARGETS if t.measurement == "abort")
        results = Results()
        m = results.add(Measurement("abort", "a", "s", False))
        m.contenders["slow_wsgipipe"] = Series([0.01, 0.02, 0.09])
        assert judge(target, results).status == MET
        m.contenders["slow_wsgipipe"] = Series([0.01, 0.02, 0.2])
        assert judge(target, results).status == MISSED

    def test_a_run_that_never_released_fails_a_bound(self) -> None:
        target = next(t for t in TARGETS if t.measurement == "stall")
        results = Results()
        m = results.add(Measurement("stall", "s", "s", False))
        m.contenders["idle_wsgipipe"] = Series([1.1, None])
        verdict = judge(target, results)
        assert verdict.status == MISSED
        assert "some runs failed" in verdict.figure

    def test_strict_bound_for_memory(self) -> None:
        target = next(t for t in TARGETS if t.measurement == "rss")
        results = Results()
        m = results.add(Measurement("rss", "r", "MiB", False))
        m.contenders["tee_slow"] = Series([8.0])
        assert judge(target, results).status == MISSED  # "< 8 MiB", not "<= 8"

    def test_missing_contender_is_unmeasured_with_its_note(self) -> None:
        results = Results()
        m = results.add(Measurement("inprocess", "i", "req/s", True, "whitenoise"))
        m.contenders["whitenoise"] = Series([1.0])
        m.contenders["static"] = Series([], note="not available yet")
        verdicts = {v.target.contender: v for v in judge_all(results)}
        assert verdicts["static"].status == UNMEASURED
        assert verdicts["static"].figure == "not available yet"
        assert verdicts["file_stream"].status == UNMEASURED


def _saved(tmp_path: Path, file_stream: list[float | None]) -> str:
    results = Results({"CPU": "test"}, {"mode": "test"})
    m = results.add(Measurement("download", "1 GiB download", "GB/s", True, "raw"))
    m.contenders["raw"] = Series([2.0, 2.0, 2.0], extra={"cpu_s_per_gib": [0.1, 0.1, 0.1]})
    m.contenders["file_stream"] = Series(file_stream, note="transfer line: via=sendfile")
    path = str(tmp_path / "results.json")
    results.save(path)
    return path


def test_results_survive_a_round_trip_through_json(tmp_path: Path) -> None:
    path = _saved(tmp_path, [2.0, None, 1.0])
    loaded = Results.load(path)
    m = loaded.measurements["download"]
    assert m.contenders["file_stream"].values == [2.0, None, 1.0]
    assert m.contenders["raw"].extra_median("cpu_s_per_gib") == 0.1
    assert loaded.machine == {"CPU": "test"}


def test_markdown_shows_figures_ratios_and_verdicts(tmp_path: Path) -> None:
    text = markdown(Results.load(_saved(tmp_path, [1.0, 2.0, 2.2])))
    assert "| wsgipipe FileStream | 2.00 | 1.00 - 2.20 | 3/3 | 1.00x (0.50 - 1.10) | - |" in text
    assert "| FileStream >= 0.95x raw file_wrapper | 1.000x (runs 0.500-1.100) | met |" in text
    assert "| CPU | test |" in text


@pytest.mark.parametrize(("values", "status"), [([2.0, 2.0, 2.0], 0), ([1.0, 1.0, 2.0], 1)])
def test_check_only_exits_non_zero_when_a_target_is_missed(
    tmp_path: Path, values: list[float | None], status: int
) -> None:
    assert main(["--check-only", _saved(tmp_path, values)]) == status


def test_strict_check_fails_on_unmeasured_targets(tmp_path: Path) -> None:
    path = _saved(tmp_path, [2.0, 2.0, 2.0])
    assert main(["--check-only", path, "--strict"]) == 1


# -- the contenders serve the right bytes -------------------------------------------
IN_PROCESS = ["raw", "generator", "send_file", "whitenoise", "shared_data", "static"]
IN_PROCESS += ["file_stream", "file_stream_logged", "tee_discard", "tee_sha256", "buffer_log"]
IN_PROCESS += ["idle_wsgipipe"]  # slow_wsgipipe holds each chunk 5 s: built below, not timed


def test_every_contender_can_be_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh clone has no bench/out/data yet: give the contenders a root of their own.
    monkeypatch.setenv("WSGIPIPE_TEST_ROOT", str(tmp_path))
    reasons = {name: apps.available(name) for name in apps.BUILDERS}
    # A missing optional package is a skip; anything else is a broken contender.
    assert {n: r for n, r in reasons.items() if r and not r.startswith("skipped:")} == {}


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    body = os.urandom(200_000)  # several 64 KiB chunks
    (tmp_path / SMALL).write_bytes(body)
    monkeypatch.setenv("WSGIPIPE_TEST_ROOT", str(tmp_path))
    return body


@pytest.mark.parametrize("name", IN_PROCESS)
def test_every_contender_serves_the_file(name: str, data: bytes) -> None:
    reason = apps.available(name)
    if reason is not None:
        pytest.skip(reason)
    response = TestApp(apps.build(name), lint=True).get(f"/{SMALL}")
    assert response.status_int == 200
    assert response.body == data


def test_the_in_process_caller_closes_what_it_gets(data: bytes) -> None:
    closed: list[bool] = []

    class Body(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response("200 OK", [])
        return Body([b"a", b"b"])

    assert call(app, base_environ()) == b"ab"
    assert closed == [True]


@pytest.mark.parametrize("url", ["http://10.0.0.1:80/x", "http://example.com/", "http://[::2]/"])
def test_clients_talk_only_to_loopback(url: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        clients.download(url)


# -- the servers the harness starts are really stopped -------------------------------
@pytest.mark.server
def test_nginx_serves_then_is_stopped_and_cleaned_up(tmp_path: Path) -> None:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (bench/system-deps installs it as root)")
    (tmp_path / SMALL).write_bytes(b"n" * 1024)
    with Nginx(str(tmp_path)) as nginx:
        result = clients.download(f"{nginx.url}/{SMALL}")
        pids = tree(nginx.pid)
        conf_dir = nginx.tmp
    assert (result.status, result.size) == (200, 1024)
    assert len(pids) == 2  # master and the one worker
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 5)
    assert not os.path.exists(conf_dir)


@pytest.mark.server
def test_file_stream_contender_goes_zero_copy_under_gunicorn(tmp_path: Path) -> None:
    body = os.urandom(300_000)
    (tmp_path / SMALL).write_bytes(body)
    with bench_gunicorn("file_stream_logged", str(tmp_path)) as server:
        result = clients.download(f"{server.url}/{SMALL}")
        assert server.wait_for_log(r"GET /small\.txt 200 finished .*via=sendfile", 5)
        pid = server.pid
    assert (result.status, result.size) == (200, len(body))
    assert not os.path.exists(f"/proc/{pid}")


# -- capacity: the curve's table and verdicts, and one real point per kind --------------
def test_capacity_table_shows_medians_and_the_verdicts_judge_the_worst_round() -> None:
    # 51 samples: p99 falls between the two slowest.
    fast = capacity.Point([0.002] * 49 + [0.030] * 2, started=1000, rss_growth_mib=10, threads=22)
    slow = capacity.Point([0.002] * 49 + [0.080] * 2, started=1000, rss_growth_mib=12, threads=22)
    points = {("offload", 1000): [fast, fast], ("gthread", 1000): [capacity.Point([2.0], 1)]}
    rows = capacity.table(points, ["gthread", "offload"], (1000,))
    assert rows[2].startswith("| plain gunicorn gthread") and "| 1/1 |" in rows[2]
    assert "| 2 ms | 30 ms | 0/102 | +10.0 MiB | 22 |" in rows[3]
    assert "p99 30 ms (target <= 50 ms: met)" in capacity.verdicts(points)[0]
    points[("offload", 1000)].append(slow)
    assert "p99 80 ms (target <= 50 ms: MISSED)" in capacity.verdicts(points)[0]
    assert "not measured" in capacity.verdicts({})[0]


@pytest.mark.server
@pytest.mark.parametrize(("name", "started"), [("gthread", 8), ("offload", 24)])
def test_capacity_point_sees_what_holds_a_thread(
    name: str, started: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 24 slow readers on one worker (with two, how they spread varies): gthread's
    # 8 threads start 8 downloads and a new client waits; the offloading
    # worker starts all 24 and answers at once.
    reason = capacity.unavailable(name)
    if reason is not None:
        pytest.skip(reason)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(64 << 20)  # sparse: more than both socket buffers hold
    (tmp_path / SMALL).write_bytes(b"s" * 1024)
    monkeypatch.setattr(capacity, "SETTLE", 0.2)
    monkeypatch.setattr(capacity, "WINDOW", 1.0)
    monkeypatch.setattr(capacity, "WORKERS", 1)
    with capacity.start(name, str(tmp_path)) as running:
        point = capacity.measure_point(running, 24)
    assert point.started == started
    if name == "gthread":
        assert point.failed == len(point.latencies) >= 1
    else:
        assert point.failed == 0 and len(point.latencies) >= 10
        assert (point.percentile(99) or 1.0) < 0.5
    assert point.threads >= 2 and point.cpu_percent >= 0
