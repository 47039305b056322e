"""OpenTelemetry: the request's span carries how the transfer ended, and ends at ``close()``.

``pip install 'wsgipipe[otel]'`` (the API only; bring your own SDK)::

    from wsgipipe.otel import instrument

    app = instrument(my_app)   # OpenTelemetryMiddleware + TransferSpans + CloseGuard

Each request's span gets ``wsgipipe.outcome`` (``finished``, ``aborted``,
``failed``), ``wsgipipe.bytes_sent``, ``wsgipipe.length``, ``wsgipipe.via``
(``sendfile``, ``python``, ``offload``) and ``wsgipipe.reason`` (why an
aborted transfer stopped), set when the server calls ``close()``; a failed
transfer also gets an error status.

:class:`TransferSpans` annotates the span that is current when it is called
(the one ``opentelemetry-instrumentation-wsgi`` or a framework started) and
leaves ending it to its owner; with no span current it starts a server span
of its own and ends it at ``close()``. ``OpenTelemetryMiddleware`` ends its
span after iterating, which is ``close()`` too, except for a body the server
closes before asking for its first chunk: its generator never started, so
neither the span's end, nor the context detach, nor the inner ``close()``
ever runs (a file left open). :class:`CloseGuard` outside it drives that
generator to its end so its own cleanup runs. :func:`instrument` assembles
the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._live_routes import Watch

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._body import Body
    from ._record import Transfer

__all__ = ["CloseGuard", "TransferSpans", "instrument"]

_SPAN = "wsgipipe.otel.span"
_GUARD = "wsgipipe.otel.guard"


class TransferSpans:
    """Middleware: put the transfer's ending on the request's span (module docstring)."""

    def __init__(self, app: WSGIApplication, *, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("wsgipipe", tracer_provider=tracer_provider)
        self.watch = Watch(app, self)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        span = trace.get_current_span()
        token = None
        own = not span.is_recording()
        if own:
            method = environ.get("REQUEST_METHOD", "GET")
            span = self.tracer.start_span(
                method,
                context=propagate.extract(environ, getter=_ENVIRON),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": environ.get("PATH_INFO")},
            )
            token = context.attach(trace.set_span_in_context(span))
        environ[_SPAN] = (span, own)
        try:
            result = self.watch(environ, start_response)
        finally:
            if token is not None:
                context.detach(token)
        guard = environ.get(_GUARD)
        return _Gate(result, guard) if isinstance(guard, _GuardState) else result

    # -- the observer ---------------------------------------------------------------
    def started(self, environ: WSGIEnvironment) -> None:
        return None

    def streaming(self, environ: WSGIEnvironment, record: Transfer, body: Body) -> None:
        return None

    def ended(self, environ: WSGIEnvironment, record: Transfer) -> None:
        span, own = environ.get(_SPAN, (None, False))
        if span is None:
            return
        annotate(span, record)
        if own:
            if record.status is not None:
                span.set_attribute("http.response.status_code", record.status)
            span.end()


def annotate(span: trace.Span, record: Transfer) -> None:
    """Set the transfer's ending on ``span`` (attributes, and an error status if it failed)."""
    outcome = record.outcome or "aborted"
    span.set_attribute("wsgipipe.outcome", outcome)
    span.set_attribute("wsgipipe.bytes_sent", record.bytes_sent)
    if record.length is not None:
        span.set_attribute("wsgipipe.length", record.length)
    via = record.notes.get("via")
    if via:
        span.set_attribute("wsgipipe.via", via)
    if record.reason:
        span.set_attribute("wsgipipe.reason", record.reason)
    if outcome == "failed":
        error = record.error
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else None))


class _GuardState:
    closing = False


class _Passing:
    """An iterable handing on ``result``'s chunks, closing it once asked."""

    def __init__(self, result: Iterable[bytes], state: _GuardState) -> None:
        self.result = result
        self.state = state
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self.result)
        return next(self._iterator)

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


class _Gate(_Passing):
    """What TransferSpans returns under a CloseGuard: stops at once when the guard closes."""

    def __next__(self) -> bytes:
        if self.state.closing:
            raise StopIteration
        return super().__next__()


class CloseGuard:
    """Middleware around ``OpenTelemetryMiddleware``: its cleanup runs on every ending.

    Needs :class:`TransferSpans` inside the instrumentation middleware. When
    the server closes the body before its first chunk, the guard starts the
    instrumentation's generator once; TransferSpans then ends the iteration
    at once, and the generator's own cleanup (inner ``close()``, span end,
    context detach) runs as for any other ending.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        state = environ[_GUARD] = _GuardState()
        return _Guarded(self.app(environ, start_response), state)


class _Guarded(_Passing):
    def close(self) -> None:
        if self._iterator is None:  # closed before the first chunk
            self.state.closing = True
            for _ in self.result:  # ends at once: the gate inside says stop
                break
        super().close()


def instrument(
    app: WSGIApplication, *, tracer_provider: Any = None, **options: Any
) -> WSGIApplication:
    """``app`` under ``opentelemetry-instrumentation-wsgi``, with spans that end at ``close()``.

    ``options`` go to ``OpenTelemetryMiddleware`` (``request_hook``,
    ``meter_provider``...). Needs ``opentelemetry-instrumentation-wsgi``;
    without it, use :class:`TransferSpans` alone, which starts its own spans.
    """
    try:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "wsgipipe.otel.instrument needs opentelemetry-instrumentation-wsgi; "
            "install it, or use TransferSpans(app) alone"
        ) from exc
    inner = TransferSpans(app, tracer_provider=tracer_provider)
    otel = OpenTelemetryMiddleware(inner, tracer_provider=tracer_provider, **options)
    return CloseGuard(otel)


class _EnvironGetter(Getter[Any]):
    """Reads propagation headers (``traceparent``) from a WSGI environ."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_ENVIRON = _EnvironGetter()
