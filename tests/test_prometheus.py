"""Prometheus metrics from the transfer records: in-process, then across real gunicorn workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from webtest import TestApp

from wsgipipe import Tee, Transfer, TransferLog, stack, static_app
from wsgipipe.prometheus import TransferMetrics, reason_label
from wsgipipe.testing import (
    GunicornServer,
    disconnect_after,
    download,
    open_files,
    raw_request,
    wait_for_transfer,
    wait_until,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

REPO = Path(__file__).resolve().parents[1]
SIZE = 256 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "file.bin").write_bytes(os.urandom(SIZE))
    return tmp_path


def value(metrics: TransferMetrics, name: str, **labels: str) -> float:
    metrics.flush()  # what the flusher thread does within a quarter of a second
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


class TestInProcess:
    def test_finished_download_counts_once_with_its_bytes(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)
        app = TestApp(metrics.wrap(static_app(root)), lint=True)
        assert len(app.get("/file.bin").body) == SIZE
        labels = {"outcome": "finished", "status_class": "2xx", "reason": ""}
        assert value(metrics, "wsgipipe_transfers_total", **labels) == 1
        sent = sum(
            value(metrics, "wsgipipe_sent_bytes_total", via=v) for v in ("python", "sendfile")
        )
        assert sent == SIZE
        assert value(metrics, "wsgipipe_transfer_duration_seconds_count", outcome="finished") == 1
        assert value(metrics, "wsgipipe_transfers_in_flight") == 0

    def test_not_found_is_a_finished_4xx(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)
        app = TestApp(metrics.wrap(static_app(root)), lint=True)
        app.get("/missing", status=404)
        labels = {"outcome": "finished", "status_class": "4xx", "reason": ""}
        assert value(metrics, "wsgipipe_transfers_total", **labels) == 1

    def test_in_flight_until_close(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)
        app = metrics.wrap(static_app(root))
        statuses: list[str] = []
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/file.bin"}, _start(statuses))
        assert value(metrics, "wsgipipe_transfers_in_flight") == 1
        next(iter(body))
        body.close()  # type: ignore[attr-defined]
        assert value(metrics, "wsgipipe_transfers_in_flight") == 0
        labels = {"outcome": "aborted", "status_class": "2xx", "reason": ""}
        assert value(metrics, "wsgipipe_transfers_total", **labels) == 1

    def test_stalled_while_no_byte_moves(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0, stalled_after=0.2)
        app = metrics.wrap(static_app(root))
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/file.bin"}, _start([]))
        chunks = iter(body)
        next(chunks)
        assert value(metrics, "wsgipipe_transfers_stalled") == 0
        time.sleep(0.3)  # the server is not asking for more: the client is not reading
        assert value(metrics, "wsgipipe_transfers_stalled") == 1
        next(chunks)  # it moved again
        assert value(metrics, "wsgipipe_transfers_stalled") == 0
        body.close()  # type: ignore[attr-defined]
        assert value(metrics, "wsgipipe_transfers_in_flight") == 0

    def test_client_gone_after_first_chunk_is_aborted(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)
        app = metrics.wrap(static_app(root))
        result = disconnect_after(app, 65536, "/file.bin")
        assert result.wsgipipe_body is not None and result.wsgipipe_body.outcome == "aborted"
        labels = {"outcome": "aborted", "status_class": "2xx", "reason": ""}
        assert value(metrics, "wsgipipe_transfers_total", **labels) == 1
        assert value(metrics, "wsgipipe_sent_bytes_total", via="python") == 65536

    def test_failed_app_counts_with_exception_name(self) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)

        def broken(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            raise RuntimeError("boom")

        app = metrics.wrap(broken)
        with pytest.raises(RuntimeError):
            download(app, "/")
        labels = {"outcome": "failed", "status_class": "none", "reason": "RuntimeError"}
        assert value(metrics, "wsgipipe_transfers_total", **labels) == 1
        assert value(metrics, "wsgipipe_transfers_in_flight") == 0

    def test_tee_sink_failure_is_counted(self, root: Path) -> None:
        metrics = TransferMetrics(CollectorRegistry(), interval=0)

        class Broken:
            def write(self, chunk: bytes) -> None:
                raise OSError("disk full")

        app = TestApp(metrics.wrap(Tee(static_app(root), Broken())), lint=True)
        assert len(app.get("/file.bin").body) == SIZE  # the client still gets everything
        assert value(metrics, "wsgipipe_tee_sink_failures_total") == 1

    def test_wrap_reuses_an_existing_transfer_log(self, root: Path) -> None:
        logged: list[Transfer] = []
        metrics = TransferMetrics(CollectorRegistry(), interval=0)
        app = TestApp(metrics.wrap(TransferLog(static_app(root), on_done=logged.append)))
        app.get("/file.bin")
        assert len(logged) == 1  # one record, not two layers of logging


@pytest.mark.parametrize(
    ("outcome", "reason", "error", "label"),
    [
        ("aborted", "idle timeout 30s", None, "idle_timeout"),
        ("aborted", "client disconnected", None, "client_disconnected"),
        ("aborted", "min rate 240 B/s after 5s", None, "min_rate"),
        ("aborted", None, None, ""),
        ("finished", "idle timeout 1s", None, ""),
        ("failed", None, ValueError("x"), "ValueError"),
    ],
)
def test_reason_label_is_low_cardinality(
    outcome: str, reason: str | None, error: BaseException | None, label: str
) -> None:
    record = Transfer("GET", "/", outcome=outcome, reason=reason, error=error)  # type: ignore[arg-type]
    assert reason_label(record) == label


class TestReservedPrefix:
    def test_a_file_under_dash_is_never_served(self, root: Path) -> None:
        (root / "-").mkdir()
        (root / "-" / "metrics").write_bytes(b"a file\n")
        app = TestApp(stack(static_app(root)), lint=True)
        app.get("/-/metrics", status=404)
        app.get("/-/", status=404)
        assert app.get("/file.bin").status_int == 200

    def test_metrics_off_by_default_and_on_when_asked(self, root: Path) -> None:
        TestApp(stack(static_app(root)), lint=True).get("/-/metrics", status=404)
        app = TestApp(stack(static_app(root), metrics=True), lint=True)
        app.get("/file.bin")
        text = app.get("/-/metrics").text
        assert "wsgipipe_transfers_total{" in text
        assert "wsgipipe_transfers_in_flight" in text


def _start(statuses: list[str]) -> StartResponse:
    def start_response(status: str, headers: object, exc_info: object = None) -> object:
        statuses.append(status)
        return lambda data: None

    return start_response  # type: ignore[return-value]


# -- across real gunicorn workers ------------------------------------------------------

BIG = 16 * 1024 * 1024


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: GunicornServer) -> Samples:
    try:
        with urllib.request.urlopen(server.url + "/-/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"scrape failed: {exc}\n{server.log[-3000:]}") from None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **want: str
) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == w for k, w in want.items())
    )


@pytest.mark.server
def test_metrics_summed_across_two_workers_and_a_restart(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "small.bin").write_bytes(os.urandom(SIZE))
    (public / "big.bin").write_bytes(os.urandom(BIG))
    (public / "big.html").write_bytes(b"<p>pre-made, so the app does not generate it</p>\n")
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {
        "WSGIPIPE_ROOT": str(public),
        "WSGIPIPE_METRICS": "1",
        "WSGIPIPE_MIN_RATE": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    with GunicornServer(
        "examples.app:app", workers=2, threads=4, cwd=REPO, env=env, config="gunicorn.conf.py"
    ) as server:
        first = server.worker_pids()
        for _ in range(6):  # Connection: close spreads them over both workers
            req = urllib.request.Request(server.url + "/small.bin", headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=5) as answer:
                assert len(answer.read()) == SIZE
        for n in range(2):  # two clients that leave early
            with raw_request(server, "/big.bin") as sock:
                sock.recv(65536)
            wait_for_transfer(server, "/big.bin", count=n + 1)
        # Each worker's flusher thread publishes within a quarter of a second.
        assert wait_until(lambda: total(scrape(server), "wsgipipe_transfers_total") == 8)
        stalled = raw_request(server, "/big.bin")  # reads nothing: stays in flight
        try:
            assert wait_until(lambda: total(scrape(server), "wsgipipe_transfers_in_flight") == 1)
            assert wait_until(lambda: any(open_files(p, public) for p in first))
            holder = next(p for p in first if open_files(p, public))
            os.kill(holder, signal.SIGKILL)  # a crashed worker: its transfer never closes
            assert wait_until(
                lambda: len(server.worker_pids()) == 2 and holder not in server.worker_pids(), 15
            )
        finally:
            stalled.close()
        samples = scrape(server)
        assert total(samples, "wsgipipe_transfers_in_flight") == 0  # child_exit forgot it
        # Scrapes are not transfers: /-/ is answered outside the counted stack.
        assert total(samples, "wsgipipe_transfers_total", outcome="finished") == 6
        # The dead worker's counts survive it.
        assert (
            total(samples, "wsgipipe_transfers_total", outcome="aborted", status_class="2xx") == 2
        )
        assert total(samples, "wsgipipe_sent_bytes_total") >= 6 * SIZE
        assert total(samples, "wsgipipe_transfer_duration_seconds_count") == 8
        assert not (multiproc / f"gauge_livesum_{holder}.db").exists()
        assert (multiproc / f"counter_{holder}.db").exists()
        # A graceful restart of the other one (SIGTERM, as max_requests does).
        other = next(p for p in first if p != holder)
        os.kill(other, signal.SIGTERM)
        assert wait_until(
            lambda: len(server.worker_pids()) == 2 and other not in server.worker_pids(), 15
        )
        after = scrape(server)
        assert total(after, "wsgipipe_transfers_total", outcome="finished") == 6
        assert total(after, "wsgipipe_transfers_total", outcome="aborted") == 2
        assert total(after, "wsgipipe_transfers_in_flight") == 0


def test_import_wsgipipe_imports_no_integration() -> None:
    """prometheus_client and opentelemetry load only with their own modules."""
    code = (
        "import sys, wsgipipe\n"
        "from wsgipipe import stack\n"
        "stack(lambda e, s: [], live=True)\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.server
def test_wsgipipe_serve_metrics_and_live(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["WSGIPIPE_LIVE_DIR"] = str(tmp_path / "live")
    cmd = [sys.executable, "-m", "wsgipipe", "serve", str(tmp_path), "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*cmd, "--metrics", "--live"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _get(url + "/a.txt") == b"hello\n", 20, 0.1)

        def counted() -> bool:
            text = (_get(url + "/-/metrics") or b"").decode()
            return (
                'wsgipipe_transfers_total{outcome="finished",reason="",status_class="2xx"} 1.0'
                in text
            )

        assert wait_until(counted, 5, 0.1)
        endings = lambda: json.loads(_get(url + "/-/transfers.json") or b"{}").get("endings")  # noqa: E731
        assert wait_until(endings, 5, 0.1)
        assert endings()[0]["path"] == "/a.txt"
    finally:
        server.terminate()
        server.wait(15)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bytes(answer.read())
    except OSError:
        return None


def test_scrape_survives_a_worker_file_being_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new worker's file is empty for an instant; a scrape then must not be a 500."""
    from prometheus_client import multiprocess, values

    from wsgipipe.prometheus import exposition_app

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    store = values.MultiProcessValue(lambda: 4242)("counter", "x_total", "x_total", (), (), "")
    store.inc(3)
    real = multiprocess.MmapedDict.read_all_values_from_file
    calls: list[str] = []

    def first_one_torn(filename: str) -> object:
        calls.append(filename)
        if len(calls) == 1:
            raise struct.error("unpack_from requires a buffer of at least 4 bytes")
        return real(filename)

    monkeypatch.setattr(multiprocess.MmapedDict, "read_all_values_from_file", first_one_torn)
    app = TestApp(exposition_app(), lint=True)
    assert "x_total 3.0" in app.get("/").text
    assert len(calls) == 2
