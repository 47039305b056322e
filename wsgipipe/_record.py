"""The transfer record: what happened to one response, filled in at ``close()``.

:class:`wsgipipe.TransferLog` creates one :class:`Transfer` per request and
puts it in ``environ["wsgipipe.transfer"]`` so that inner layers (a digest
sink, the idle-timeout guard) can add notes to the same line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._log_text import log_text

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ._body import Outcome

__all__ = ["ENVIRON_KEY", "Transfer", "current_transfer"]

ENVIRON_KEY = "wsgipipe.transfer"


@dataclass
class Transfer:
    """One response's life, as seen from the server's ``close()`` call."""

    method: str
    path: str
    status: int | None = None
    bytes_sent: int = 0
    #: The announced ``Content-Length``; None for chunked or close-delimited bodies.
    length: int | None = None
    outcome: Outcome | None = None
    duration: float = 0.0
    error: BaseException | None = None
    #: Why an aborted transfer ended, when known (``"idle timeout 30s"``).
    reason: str | None = None
    #: Extra ``key=value`` facts from inner layers, e.g. ``sha256``.
    notes: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic, repr=False)

    def line(self) -> str:
        """One readable log line: ``GET /big.bin 200 aborted 65536/1073741824 B 1.20s``."""
        length = "?" if self.length is None else str(self.length)
        parts = [
            self.method,
            self.path,
            str(self.status if self.status is not None else "-"),
            self.outcome or "running",
            f"{self.bytes_sent}/{length} B",
            f"{self.duration:.2f}s",
        ]
        # Notes are the app's (a user name, a header): escaped like the path.
        parts.extend(
            f"{log_text(str(key))}={log_text(str(value), spaces=True)}"
            for key, value in self.notes.items()
        )
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        if self.error is not None:
            # Messages can carry client input (a file name): one line, escaped.
            message = log_text(str(self.error), spaces=True)
            parts.append(f"error={type(self.error).__name__}: {message}")
        return " ".join(parts)


def current_transfer(environ: WSGIEnvironment) -> Transfer | None:
    """The record an outer :class:`wsgipipe.TransferLog` keeps for this request."""
    record = environ.get(ENVIRON_KEY)
    return record if isinstance(record, Transfer) else None
