"""Tee: copy every body chunk to extra sinks on its way to the server.

Chunks are written to each sink synchronously and then handed on, so memory
stays flat whatever the body size (nothing is buffered, no ``itertools.tee``).
A sink never breaks the response unless asked to: one that raises is detached
and logged once, and the client keeps receiving its body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from ._body import Body, close_all
from ._errors import ConfigurationError, SinkError
from ._handoff import observe, reads_body

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .sinks import SinkFactory, Writer

__all__ = ["Tee"]

log = logging.getLogger("wsgipipe.tee")

Headers = list[tuple[str, str]]


class Tee:
    """Middleware writing every body chunk of ``app`` to each of ``sinks``.

    A sink is either an object with ``write(bytes)`` (shared by all responses;
    flushed at the end of each, never closed) or a factory
    ``(environ, status, headers) -> writer | None`` (one writer per response;
    told the outcome through ``finish(outcome)`` if it has one, then closed).

    By default a sink receives exactly the bytes the server accepted: a chunk
    is copied once the server asks for the next one, so the copy of an aborted
    response never holds the chunk whose write failed.

    With ``strict=True`` a failing sink fails the response instead of being
    detached: the exception reaches the server, which aborts the connection.
    Chunks are then copied *before* they are handed on, so a sink never holds
    less than the client received.
    A tee reads the body in Python, so it turns off the server's zero-copy
    path for the responses it copies.
    """

    def __init__(self, app: WSGIApplication, *sinks: object, strict: bool = False) -> None:
        self.app = app
        self.strict = strict
        self.shared: list[Writer] = []
        self.factories: list[SinkFactory] = []
        for sink in sinks:
            if callable(getattr(sink, "write", None)):
                self.shared.append(cast("Writer", sink))
            elif callable(sink):
                self.factories.append(cast("SinkFactory", sink))
            else:
                raise ConfigurationError(
                    f"a Tee sink needs write(bytes) or must be a factory; got {sink!r}"
                )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD" or not (self.shared or self.factories):
            return self.app(environ, start_response)
        copy = _Copy(self, environ)

        def tee_start_response(
            status: str, headers: Headers, exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            copy.status, copy.headers = status, headers
            return start_response(status, headers, exc_info)

        reads_body(environ)  # so that no layer beneath hands the server a file wrapper
        body, server = observe(environ, self.app(environ, tee_start_response), transform=copy.write)
        body.on_close(copy.finish)
        return server


class _Copy:
    """The sinks of one response and what happened to them."""

    def __init__(self, tee: Tee, environ: WSGIEnvironment) -> None:
        self.tee = tee
        self.environ = environ
        self.status = ""
        self.headers: Headers = []
        self.active: list[Writer] = list(tee.shared)
        self.owned: list[Any] = []  # per-response writers, closed at the end
        self.failed: set[int] = set()
        self.started = False
        self.pending = b""  # handed to the server, not yet known to be written

    def _start(self) -> None:
        self.started = True
        for factory in self.tee.factories:
            try:
                writer = factory(self.environ, self.status, self.headers)
            except Exception as exc:
                self._sink_failed(factory, exc)
                continue
            if writer is not None:
                self.owned.append(writer)
                self.active.append(writer)

    def write(self, chunk: bytes) -> bytes:
        """The per-chunk transform: copy, then hand the chunk on unchanged."""
        if self.tee.strict:
            self._copy(chunk)  # the sinks have it before the client does
            return chunk
        # By default a chunk is copied once the server asks for the next one,
        # i.e. once its write succeeded, so that a copy never holds more than
        # the server accepted (the same rule as Body.bytes_sent).
        self._copy(self.pending)
        self.pending = chunk
        return chunk

    def _copy(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self.started:
            self._start()
        for sink in self.active:  # a failing sink is dropped by rebinding, not mutation
            try:
                sink.write(chunk)
            except Exception as exc:
                self.active = [s for s in self.active if s is not sink]
                self.failed.add(id(sink))
                self._sink_failed(sink, exc)

    def _sink_failed(self, sink: object, exc: Exception) -> None:
        if self.tee.strict:
            raise SinkError(f"tee sink {sink!r} failed: {exc}") from exc
        log.error("tee sink %r failed and was detached; the response goes on", sink, exc_info=exc)

    def finish(self, body: Body) -> None:
        try:
            if body.outcome == "finished":
                self._copy(self.pending)  # the server came back after the last chunk
            if not self.started and body.outcome == "finished":
                self._start()  # an empty body still gets its per-response sinks (sha256 of b"")
        finally:
            # A strict sink failing just above must not leave the writers open.
            self._close_sinks(body)

    def _close_sinks(self, body: Body) -> None:
        outcome = body.outcome or "aborted"
        steps = [_flusher(s) for s in self.tee.shared if id(s) not in self.failed]
        steps += [_finisher(w, "failed" if id(w) in self.failed else outcome) for w in self.owned]
        try:
            close_all(*steps)
        except Exception as exc:
            if self.tee.strict:
                raise
            log.error("closing a tee sink failed", exc_info=exc)


def _flusher(sink: object) -> Callable[[], object]:
    flush = getattr(sink, "flush", None)
    return flush if callable(flush) else _nothing


def _finisher(writer: object, outcome: str) -> Callable[[], object]:
    finish = getattr(writer, "finish", None)
    close = getattr(writer, "close", None)

    def run() -> None:
        close_all(
            (lambda: finish(outcome)) if callable(finish) else _nothing,
            close if callable(close) else _nothing,
        )

    return run


def _nothing() -> None:
    return None
