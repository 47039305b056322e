"""How fast a client must take a response: the idle timeout and the minimum data rate.

A leaf (imports nothing from wsgipipe but the errors): the policy as data
(:class:`Pace`) and one pure checker per transfer (:class:`Progress`). Whoever
sends the bytes (the thread path's watchdog, an event-driven sender) feeds the
checker what the client has acknowledged so far and cuts the connection when
it returns a reason. The reasons are exact strings, recorded on the transfer
line:

* ``"idle timeout 30s"`` (the number is the timeout, formatted with ``:g``):
  bytes were waiting for the client and it acknowledged none of them for
  ``idle_timeout`` seconds;
* ``"min rate"``: after the ``grace`` period, the bytes the client has
  acknowledged fell behind ``min_rate`` bytes per second of time spent
  waiting on it. This is Kestrel's ``MinResponseDataRate`` (240 B/s after a
  5 s grace period by default): a client may read slowly for a while, and a
  fast start earns it slack, but it cannot hold the connection for ever at a
  trickle.

Only time during which bytes wait for the client counts (``pending``): a
response that is slow to *produce* (a :class:`~wsgipipe.Delay`, a
:class:`~wsgipipe.Throttle`) is never the client's fault.

A middleware or the app sets the pace of one response by storing a
:class:`Pace` in ``environ[PACE_KEY]`` (``"wsgipipe.pace"``); it replaces the
deployment's pace for that response only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MIN_RATE",
    "MIN_RATE_REASON",
    "PACE_KEY",
    "Pace",
    "Progress",
    "idle_reason",
]

#: The environ key through which a middleware or the app sets one response's pace.
PACE_KEY = "wsgipipe.pace"

#: Kestrel's defaults for ``MinResponseDataRate``: 240 bytes/s after 5 s.
DEFAULT_MIN_RATE = 240.0
DEFAULT_GRACE = 5.0

#: The reason recorded when a client reads slower than the floor.
MIN_RATE_REASON = "min rate"


def idle_reason(seconds: float) -> str:
    """The reason recorded for an idle client: ``"idle timeout 30s"``."""
    return f"idle timeout {seconds:g}s"


@dataclass(frozen=True)
class Pace:
    """The policy: ``idle_timeout`` seconds, ``min_rate`` bytes/s after ``grace`` s.

    ``None`` (or 0) turns a limit off. Raises
    :class:`~wsgipipe.ConfigurationError` for negative or non-finite
    values, when the pace is built rather than when a client is cut.
    """

    idle_timeout: float | None = None
    min_rate: float | None = None
    grace: float = DEFAULT_GRACE

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "min_rate"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a number >= 0 or None, not {value!r}")
            object.__setattr__(self, name, float(value) if value else None)
        if not (_finite(self.grace) and self.grace >= 0):
            raise ConfigurationError(f"grace must be a number >= 0, not {self.grace!r}")
        object.__setattr__(self, "grace", float(self.grace))

    @property
    def active(self) -> bool:
        """Whether any limit is on (a pace with none needs no watching)."""
        return self.idle_timeout is not None or self.min_rate is not None

    def progress(self, now: float) -> Progress:
        """A fresh checker for one transfer that starts at ``now``."""
        return Progress(self, now)

    def check_interval(self) -> float:
        """How often a watcher should look: a quarter of the shortest limit, 10 ms to 1 s.

        A cut then comes within 1.25 times the limit; the 1 s ceiling keeps
        the cost of watching thousands of slow transfers low under the
        defaults (30 s idle, 5 s grace), where a second more does not matter.
        """
        limits = [x for x in (self.idle_timeout, self.grace if self.min_rate else None) if x]
        return min(max(min(limits, default=4.0) / 4, 0.01), 1.0)


class Progress:
    """The checker of one transfer: feed it the client's acknowledged bytes.

    ``total_acked`` is any counter that only grows (``TCP_INFO``
    ``bytes_acked`` of the connection, or bytes sent minus the send queue);
    only its growth from the first value seen counts, so the headers and
    earlier responses on a kept-alive connection do not.
    """

    def __init__(self, pace: Pace, now: float) -> None:
        self.pace = pace
        self.base: int | None = None  # first total_acked seen
        self.acked = 0  # bytes acknowledged since then
        self.waited = 0.0  # seconds during which bytes waited for the client
        self.last_move = 0.0  # self.waited when the client last took a byte
        self.last_now = now

    def progress(self, total_acked: int, now: float, *, pending: bool = True) -> str | None:
        """The reason to cut this client now, or None.

        ``pending`` says whether bytes were waiting for the client since the
        previous call (a server that has nothing queued is not waiting on it).
        """
        if self.base is None:
            self.base = total_acked
        if pending:
            self.waited += max(now - self.last_now, 0.0)
        self.last_now = now
        acked = total_acked - self.base
        if acked != self.acked or not pending:
            self.acked = max(acked, self.acked)
            self.last_move = self.waited
        return self._verdict()

    def _verdict(self) -> str | None:
        pace = self.pace
        if pace.idle_timeout is not None and self.waited - self.last_move >= pace.idle_timeout:
            return idle_reason(pace.idle_timeout)
        # Kestrel's deadline: grace + acked / rate seconds of waiting.
        if pace.min_rate is not None and self.waited > pace.grace + self.acked / pace.min_rate:
            return MIN_RATE_REASON
        return None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
