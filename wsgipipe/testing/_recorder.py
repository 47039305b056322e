"""Collect the transfer records of a test.

A test wants to say "this response was aborted after 65536 bytes" or "the
sha256 of what was sent is …". :class:`~wsgipipe.TransferLog` already knows
both at ``close()``; the recorder just keeps its records for the test.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._record import Transfer
from .._transfer_log import TransferLog

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["TransferRecorder"]


class TransferRecorder(logging.Handler):
    """Keeps every :class:`~wsgipipe.Transfer` it is given, in order.

    Feed it in one of two ways (not both, or each record counts twice):

    * ``recorder.wrap(app)``, or ``TransferLog(app, on_done=recorder)``;
    * ``with recorder.listening():`` attaches it to the ``wsgipipe`` logger,
      so it sees every TransferLog in an app you cannot rewrap.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.transfers: list[Transfer] = []
        self._changed = threading.Condition()

    def __call__(self, record: Transfer) -> None:
        """The ``on_done`` hook of :class:`~wsgipipe.TransferLog`."""
        with self._changed:
            self.transfers.append(record)
            self._changed.notify_all()

    def emit(self, record: logging.LogRecord) -> None:
        transfer = getattr(record, "transfer", None)
        if isinstance(transfer, Transfer):
            self(transfer)

    def wrap(self, app: WSGIApplication) -> TransferLog:
        """``app`` under a TransferLog that reports to this recorder."""
        return TransferLog(app, on_done=self)

    @contextmanager
    def listening(self, logger: str = "wsgipipe") -> Iterator[TransferRecorder]:
        """Receive the records TransferLog logs on ``logger`` while the block runs."""
        target = logging.getLogger(logger)
        level = target.level
        # TransferLog logs finished transfers at INFO; a quieter logger would
        # drop them before any handler sees them.
        if not target.isEnabledFor(logging.INFO):
            target.setLevel(logging.INFO)
        target.addHandler(self)
        try:
            yield self
        finally:
            target.removeHandler(self)
            target.setLevel(level)

    @property
    def last(self) -> Transfer:
        """The most recent record; fails the test clearly if there is none."""
        with self._changed:
            if not self.transfers:
                raise AssertionError("no transfer was recorded")
            return self.transfers[-1]

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Transfer]:
        """Wait until ``count`` records exist (a server thread may still be closing).

        Raises :class:`AssertionError` naming what was recorded if they do not come.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.transfers) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    lines = [t.line() for t in self.transfers] or ["(none)"]
                    raise AssertionError(
                        f"expected {count} transfer(s) within {timeout}s; got:\n  "
                        + "\n  ".join(lines)
                    )
                self._changed.wait(remaining)
            return list(self.transfers)

    def clear(self) -> None:
        with self._changed:
            self.transfers.clear()
