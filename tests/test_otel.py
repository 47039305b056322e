"""OpenTelemetry spans that carry the transfer's ending and end at the real ``close()``.

Spans go to the SDK's in-memory exporter; the instrumentation middleware is
the real ``opentelemetry-instrumentation-wsgi``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import context, trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from webtest import TestApp

from wsgipipe import IdleTimeout, TransferLog, static_app
from wsgipipe.otel import TransferSpans, instrument
from wsgipipe.testing import disconnect_after, download, open_files, stalled_client

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SIZE = 1024 * 1024
CHUNK = 65536


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    found = TracerProvider()
    found.add_span_processor(SimpleSpanProcessor(exporter))
    yield found
    found.shutdown()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "file.bin").write_bytes(os.urandom(SIZE))
    return tmp_path


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, spans
    return spans[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def slow_app(chunks: int, pause: float) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(chunks * 10))]
        start_response("200 OK", headers)

        def body() -> Iterator[bytes]:
            for _ in range(chunks):
                time.sleep(pause)
                yield b"x" * 10

        return body()

    return app


def failing_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body() -> Iterator[bytes]:
        yield b"y" * 100
        raise OSError("disk went away")

    return body()


def test_finished_span_ends_at_close_not_when_the_app_returns(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = TestApp(instrument(slow_app(3, 0.1), tracer_provider=provider), lint=True)
    assert app.get("/slow").body == b"x" * 30
    span = only_span(exporter)
    assert span.kind == trace.SpanKind.SERVER  # the instrumentation's span, annotated
    assert attrs(span)["wsgipipe.outcome"] == "finished"
    assert attrs(span)["wsgipipe.bytes_sent"] == 30
    assert attrs(span)["wsgipipe.via"] == "python"
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.3  # the body took 0.3 s after return


def test_file_download(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = TestApp(instrument(static_app(root), tracer_provider=provider), lint=True)
    assert len(app.get("/file.bin").body) == SIZE
    found = attrs(only_span(exporter))
    assert found["wsgipipe.outcome"] == "finished"
    assert found["wsgipipe.bytes_sent"] == found["wsgipipe.length"] == SIZE


def test_aborted_after_the_first_byte(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = disconnect_after(
        instrument(static_app(root), tracer_provider=provider), CHUNK, "/file.bin"
    )
    assert result.error is None
    found = attrs(only_span(exporter))
    assert found["wsgipipe.outcome"] == "aborted"
    assert found["wsgipipe.bytes_sent"] == CHUNK
    assert found["wsgipipe.length"] == SIZE
    assert only_span(exporter).status.status_code != StatusCode.ERROR  # the client left


def test_closed_before_the_first_chunk(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The server closes without iterating (the client was gone before the first write)."""
    app = instrument(static_app(root), tracer_provider=provider)
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/file.bin", **_server()}, _start)
    assert not exporter.get_finished_spans()  # still in flight
    body.close()  # type: ignore[attr-defined]
    found = attrs(only_span(exporter))
    assert found["wsgipipe.outcome"] == "aborted"
    assert found["wsgipipe.bytes_sent"] == 0
    assert open_files(under=root) == []  # the file was released too
    assert not trace.get_current_span().get_span_context().is_valid  # context detached


def test_plain_instrumentation_loses_that_ending(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Why CloseGuard exists: without it the span never ends and the body is never closed."""
    closed: list[object] = []
    inner = TransferSpans(TransferLog(static_app(root), on_done=closed.append))
    app = OpenTelemetryMiddleware(inner, tracer_provider=provider)
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/file.bin", **_server()}, _start)
    forgotten = dict(body.gi_frame.f_locals)  # type: ignore[attr-defined]
    body.close()  # type: ignore[attr-defined]
    try:
        assert exporter.get_finished_spans() == ()
        assert closed == []
    finally:  # release what the instrumentation forgot
        forgotten["iterable"].close()
        forgotten["span"].end()
        context.detach(forgotten["token"])


def test_stalled_client_is_cut_and_the_span_says_why(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    (root / "big.bin").write_bytes(os.urandom(16 * SIZE))
    app = instrument(IdleTimeout(static_app(root), 0.3), tracer_provider=provider)
    result = stalled_client(app, "/big.bin", timeout=5)
    assert result.release_delay is not None and result.release_delay < 3
    found = attrs(only_span(exporter))
    assert found["wsgipipe.outcome"] == "aborted"
    assert found["wsgipipe.reason"].startswith("idle timeout")
    assert 0 < found["wsgipipe.bytes_sent"] < 16 * SIZE


def test_failed_mid_body(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    result = download(instrument(failing_app, tracer_provider=provider), "/", raise_errors=False)
    assert isinstance(result.error, OSError)
    span = only_span(exporter)
    assert attrs(span)["wsgipipe.outcome"] == "failed"
    assert attrs(span)["wsgipipe.bytes_sent"] == 100
    assert attrs(span)["error.type"] == "OSError"
    assert span.status.status_code == StatusCode.ERROR


def test_failed_before_the_body(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    def broken(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("no body at all")

    with pytest.raises(RuntimeError):
        download(instrument(broken, tracer_provider=provider), "/")
    span = only_span(exporter)
    assert attrs(span)["wsgipipe.outcome"] == "failed"
    assert span.status.status_code == StatusCode.ERROR


def test_own_span_without_the_instrumentation(
    root: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    app = TestApp(TransferSpans(static_app(root), tracer_provider=provider), lint=True)
    app.get("/file.bin", headers={"traceparent": parent})
    span = only_span(exporter)
    assert span.kind == trace.SpanKind.SERVER
    assert attrs(span)["wsgipipe.outcome"] == "finished"
    assert attrs(span)["http.response.status_code"] == 200
    assert span.context is not None and f"{span.context.trace_id:032x}" in parent
    disconnect_after(app.app, 0, "/file.bin")
    aborted = exporter.get_finished_spans()[-1]
    assert attrs(aborted)["wsgipipe.outcome"] == "aborted"
    assert attrs(aborted)["wsgipipe.bytes_sent"] == 0


def _server() -> dict[str, Any]:
    return {
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }


def _start(status: str, headers: object, exc_info: object = None) -> object:
    return lambda data: None
