"""Ready-made sinks for :class:`wsgipipe.Tee`.

A *shared* sink is any object with ``write(bytes)``: it sees every response's
chunks and is flushed, never closed, by wsgipipe. A *per-response* sink comes
from a factory ``(environ, status, headers) -> writer | None``: wsgipipe calls
its ``finish(outcome)`` (if it has one) and then its ``close()`` when the
response ends.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

from ._errors import ConfigurationError
from ._record import current_transfer

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ._body import Outcome

__all__ = [
    "Capture",
    "Captured",
    "Digest",
    "DigestWriter",
    "DirectorySink",
    "SinkFactory",
    "StreamSink",
    "Writer",
    "scope_of",
    "stdout",
]

Headers = list[tuple[str, str]]


class Writer(Protocol):
    """Anything a chunk can be written to."""

    def write(self, data: bytes, /) -> object: ...


class SinkFactory(Protocol):
    """Makes one writer per response (or None to skip that response)."""

    def __call__(
        self, environ: WSGIEnvironment, status: str, headers: Headers, /
    ) -> Writer | None: ...


def scope_of(status: str, outcome: Outcome | None) -> str:
    """What a digest or copy covers: ``full``, ``range`` (a 206) or ``partial``."""
    if outcome != "finished":
        return "partial"
    return "range" if status.startswith("206") else "full"


class StreamSink:
    """A shared sink writing to a binary stream; stdout by default.

    The stream is looked up at each write when none is given, so pytest's
    capture and a redirected ``sys.stdout`` both work.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # chunks of concurrent responses stay whole

    @property
    def stream(self) -> IO[bytes]:
        return self._stream if self._stream is not None else sys.stdout.buffer

    def write(self, data: bytes) -> None:
        with self._lock:
            self.stream.write(data)

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()


def stdout() -> StreamSink:
    """The body also goes to the server console, as in ``pipe(process.stdout)``."""
    return StreamSink()


class _FileWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def finish(self, outcome: Outcome) -> None:
        # An incomplete copy must not pass for the real thing.
        if outcome != "finished":
            self._file.close()
            partial = self.path + ".partial"
            os.replace(self.path, partial)
            self.path = partial

    def close(self) -> None:
        self._file.close()


class DirectorySink:
    """A per-response sink factory: one file per response body in ``directory``.

    Files are named ``<time>-<n>-<path>.body``; a body that did not finish is
    renamed to ``….body.partial``. The directory is created if missing.
    """

    _SAFE = re.compile(r"[^A-Za-z0-9._-]+")

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot use {self.directory!r} as a sink: {exc}") from exc
        self._counter = itertools.count(1)

    def __call__(self, environ: WSGIEnvironment, status: str, headers: Headers) -> _FileWriter:
        label = self._SAFE.sub("_", environ.get("PATH_INFO", "") or "_").strip("_")[:80]
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{next(self._counter):06d}-{label or 'root'}.body"
        return _FileWriter(os.path.join(self.directory, name))


class DigestWriter:
    """Hashes one response body; the digest is reported when it ends."""

    def __init__(self, algorithm: str, environ: WSGIEnvironment, status: str) -> None:
        self.algorithm = algorithm
        self.status = status
        self.scope: str | None = None
        self._hash = hashlib.new(algorithm)
        self._environ = environ

    def write(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def finish(self, outcome: Outcome) -> None:
        # The digest is of the bytes sent (RFC 9530's Content-Digest sense):
        # for a 206 it covers the range only, so say so (docs/decisions.md#range-digests).
        self.scope = scope_of(self.status, outcome)
        record = current_transfer(self._environ)
        if record is not None:
            value = self.hexdigest()
            record.notes[self.algorithm] = (
                value if self.scope == "full" else f"{value}({self.scope})"
            )


class Digest:
    """A per-response sink factory hashing each body (sha256 by default)."""

    def __init__(self, algorithm: str = "sha256") -> None:
        try:
            hashlib.new(algorithm)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"unknown hash algorithm {algorithm!r}") from exc
        self.algorithm = algorithm
        self.last: DigestWriter | None = None

    def __call__(self, environ: WSGIEnvironment, status: str, headers: Headers) -> DigestWriter:
        self.last = DigestWriter(self.algorithm, environ, status)
        return self.last


@dataclass
class Captured:
    """One response as a :class:`Capture` sink saw it."""

    method: str
    path: str
    status: str
    headers: Headers
    body: bytearray = field(default_factory=bytearray)
    outcome: Outcome | None = None
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.body += data

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def close(self) -> None:
        self.closed = True

    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


class Capture:
    """A per-response sink factory keeping every body in memory, for tests."""

    def __init__(self) -> None:
        self.responses: list[Captured] = []
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, status: str, headers: Headers) -> Captured:
        captured = Captured(
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO", ""),
            status,
            list(headers),
        )
        with self._lock:
            self.responses.append(captured)
        return captured

    @property
    def last(self) -> Captured:
        if not self.responses:
            raise LookupError("no response captured yet")
        return self.responses[-1]
