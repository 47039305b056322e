"""Through, Throttle and Delay: body transforms in the spirit of Node's through streams.

* :class:`Through` maps every chunk with a function (``pipe(through(fn))``);
* :class:`Throttle` sends at most N bytes per second (nginx ``limit_rate``,
  ``curl --limit-rate`` done by the server);
* :class:`Delay` holds every chunk for a fixed time (the "slow through" of
  the classic streaming lessons).

Every wait happens in :meth:`wsgipipe.Connection.wait`, which
watches the client socket: when the client disconnects during a pause the
body raises :class:`~wsgipipe.ClientGone`, the server closes it and
the file is released at once rather than at the next write. The transfer is
recorded as ``aborted`` with reason ``client disconnected``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ._connection import Connection
from ._errors import ConfigurationError
from ._handoff import observe, reads_body
from ._record import current_transfer

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Delay", "Throttle", "Through", "parse_rate"]

Headers = list[tuple[str, str]]

#: A throttled body goes out in about this many pieces per second: small
#: enough to look smooth to the client, large enough to cost little CPU.
PIECES_PER_SECOND = 10

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*(?:/s)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

#: 1 TiB/s: faster than any link, and an exact float, so no overflow.
MAX_RATE = 2**40


def parse_rate(text: str | float) -> int:
    """Bytes per second from ``"1k"``, ``"2.5M"``, ``"500"`` (curl's units: k = 1024).

    Raises :class:`~wsgipipe.ConfigurationError` (a ValueError) for
    anything else, zero included.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _RATE.fullmatch(text)
        if match is None:
            raise ConfigurationError(f"not a rate: {text!r} (try 1k, 500, 2M)")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    # "9" * 310 reads as inf, and int(inf) raises OverflowError: also refused.
    if not 1 <= value <= MAX_RATE:
        raise ConfigurationError(f"a rate must be 1 to {MAX_RATE} bytes per second, not {text!r}")
    return int(value)


class _BodyMiddleware:
    """Shared shape: call the app, then read its body through :func:`observe`."""

    #: Whether the transformed body keeps the app's Content-Length.
    keeps_length = True

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD":
            return self.app(environ, start_response)  # no body to transform
        reads_body(environ)  # so that no layer beneath hands the server a file wrapper
        return self._wrap(environ, self.app(environ, self._start_response(start_response)))

    def _start_response(self, start_response: StartResponse) -> StartResponse:
        if self.keeps_length:
            return start_response

        def without_length(
            status: str, headers: Headers, exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            # A body of another length must not be announced with the old
            # one (RFC 9112 §6.3): let the server chunk it or close-delimit it.
            kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
            return start_response(status, kept, exc_info)

        return without_length

    def _wrap(self, environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
        raise NotImplementedError  # pragma: no cover


class Through(_BodyMiddleware):
    """Map every body chunk of ``app`` through ``fn(chunk) -> bytes``.

    ``fn`` may return ``b""`` to drop a chunk. Unless ``keeps_length=True``
    says ``fn`` never changes a chunk's length, the ``Content-Length`` header
    is removed. The body is read in Python, so zero-copy is off for it.
    """

    def __init__(
        self, app: WSGIApplication, fn: Callable[[bytes], bytes], *, keeps_length: bool = False
    ) -> None:
        super().__init__(app)
        self.fn = fn
        self.keeps_length = keeps_length

    def _wrap(self, environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
        return observe(environ, result, transform=self.fn).server


class Delay(_BodyMiddleware):
    """Hold every body chunk for ``seconds`` before it goes out (the "slow through").

    The wait ends early, with the transfer aborted, when the client
    disconnects (see :class:`~wsgipipe.Connection`).
    """

    def __init__(self, app: WSGIApplication, seconds: float) -> None:
        if not seconds >= 0:
            raise ConfigurationError(f"a delay must be zero or more seconds, not {seconds!r}")
        super().__init__(app)
        self.seconds = float(seconds)

    def _wrap(self, environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
        _note(environ, "delay", f"{self.seconds:g}s")
        wait, seconds = Connection(environ).wait, self.seconds
        return observe(environ, result, source=lambda s: _Paced(s, lambda n: wait(seconds))).server


class Throttle(_BodyMiddleware):
    """Send the body of ``app`` at no more than ``bytes_per_second`` (e.g. ``"1k"``).

    Chunks are cut into pieces of about a tenth of the rate and paced from
    the first byte, so the average never exceeds the limit. Waiting between
    pieces watches the client, so an abort is noticed at once.
    """

    def __init__(self, app: WSGIApplication, bytes_per_second: str | float) -> None:
        super().__init__(app)
        self.rate = parse_rate(bytes_per_second)
        self.piece = max(1, self.rate // PIECES_PER_SECOND)

    def _wrap(self, environ: WSGIEnvironment, result: Iterable[bytes]) -> Iterable[bytes]:
        _note(environ, "rate", f"{self.rate}B/s")
        pacer = _Pacer(self.rate, Connection(environ).wait)
        return observe(environ, result, source=lambda s: _Paced(s, pacer, self.piece)).server


class _Pacer:
    """Waits so that ``sent`` bytes never leave before ``sent / rate`` seconds."""

    def __init__(self, rate: int, wait: Callable[[float], None]) -> None:
        self.rate = rate
        self.wait = wait
        self.sent = 0
        self.started: float | None = None

    def __call__(self, size: int) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        due = self.started + self.sent / self.rate
        if due > now:
            self.wait(due - now)
        self.sent += size


class _Paced:
    """Iterate ``source`` in pieces of at most ``size`` bytes, calling ``before(n)`` first.

    A class, not a generator: it holds no resource of its own (the Observed
    around it closes what the app returned), so there is nothing to forget.
    """

    def __init__(
        self, source: Iterable[bytes], before: Callable[[int], None], size: int | None = None
    ) -> None:
        self._source = source
        self._iterator: Iterator[bytes] | None = None
        self._before = before
        self._size = size
        self._buffer = memoryview(b"")

    def __iter__(self) -> _Paced:
        return self

    def __next__(self) -> bytes:
        while not self._buffer:
            if self._iterator is None:
                self._iterator = iter(self._source)
            self._buffer = memoryview(next(self._iterator))
        size = len(self._buffer) if self._size is None else self._size
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        self._before(len(piece))
        return bytes(piece)


def _note(environ: WSGIEnvironment, key: str, value: str) -> None:
    record = current_transfer(environ)
    if record is not None:
        record.notes[key] = value
