"""The minimum response data rate under a real gunicorn: gthread and the offloading worker.

One server, four clients started together (so the module takes one grace
period plus a few seconds, not four): a reader at 50 B/s on the sendfile
path and one on the Python path are cut with ``reason='min rate'`` and their
files released; a reader at 4x the floor and a response whose own pace
has no floor are never cut. The floor is 4 KiB/s after a 1 s grace period,
with the idle timeout at 30 s so that only the rate can cut. Under
wsgipipe's OffloadWorker the file goes through its sender, and the same
watchdog cuts it (the body stays open until the sender is done).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from slow_clients import CLIENTS, FLOOR, GRACE, WATCH, Run, make_files, paced_server, seconds_of

from wsgipipe.testing import transfer_lines, wait_until

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=["gthread", "wsgipipe.gunicorn.OffloadWorker"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("paced")
    make_files(root, CLIENTS)
    with (
        paced_server(root, request.param, workers=1, threads=8) as server,
        ThreadPoolExecutor(len(CLIENTS)) as pool,
    ):
        yield Run(server, root, pool)
        assert "[ERROR]" not in server.log, server.log[-3000:]


@pytest.mark.parametrize("name", ["slow", "python"])
def test_a_reader_below_the_floor_is_cut_with_reason_min_rate(run: Run, name: str) -> None:
    line = run.line(name, timeout=GRACE + 8)
    assert " 200 aborted " in line
    assert "reason='min rate'" in line
    # The offloading worker's sender carries the file; the watchdog still cuts.
    zero_copy = "via=offload" if "Offload" in run.server.worker_class else "via=sendfile"
    assert (zero_copy if name == "slow" else "via=python") in line
    # Not before the grace period, and soon after the first few KiB were earned.
    assert GRACE <= seconds_of(line) < GRACE + 4, line
    assert wait_until(lambda: not run.held(name), 2.0), run.server.open_files(run.root)


def test_a_reader_above_the_floor_is_never_cut(run: Run) -> None:
    reading = run.readings["above"].result(WATCH + 15)
    assert reading.status == 200
    assert not reading.ended_by_server
    assert reading.got >= FLOOR * WATCH  # it did read above the floor
    # It hung up itself after WATCH seconds, the transfer still running.
    line = run.line("above")
    assert " 200 aborted " in line
    assert "reason=" not in line
    assert seconds_of(line) >= WATCH - 0.5
    assert wait_until(lambda: not run.held("above"), 2.0)


def test_a_response_with_its_own_pace_is_not_cut(run: Run) -> None:
    # The app stored Pace(min_rate=None) in environ["wsgipipe.pace"] for this
    # response only; the same slow reader on /file/ was cut.
    reading = run.readings["override"].result(WATCH + 15)
    assert reading.status == 200
    assert not reading.ended_by_server
    line = run.line("override")
    assert " 200 aborted " in line
    assert "reason=" not in line
    assert seconds_of(line) >= WATCH - 0.5
    assert len(transfer_lines(run.server.log, CLIENTS["slow"][0])) == 1
