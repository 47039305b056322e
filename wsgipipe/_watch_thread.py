"""One daemon thread going over a set of watches that request threads add and remove.

The thread starts with the first watch and ends once there is none left;
the next ``add()`` starts a new one, so a process with nothing to watch
keeps no idle thread. The idle timeout's watchdog and the proxy's client
watch are each one of these: they differ only in what one round does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["WatchThread"]

W = TypeVar("W", bound=Hashable)


class WatchThread(Generic[W]):
    """Watches under one lock, and the thread that calls :meth:`round` on them.

    A subclass names its thread, gives the logger and message for a round
    that fails, and says what one :meth:`round` does.
    """

    thread_name: str
    logger: logging.Logger
    failure: str

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh: no thread, nothing watched (also in a forked child)."""
        self._lock = threading.Lock()
        self._watches: set[W] = set()
        self._running = False

    def add(self, watch: W) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._running:
                return
            self._running = True
        try:
            threading.Thread(target=self._run, name=self.thread_name, daemon=True).start()
        except BaseException:
            # No thread (the process is out of them): the caller hears it, and
            # neither this watch nor a stale "running" outlives the failure.
            with self._lock:
                self._watches.discard(watch)
                self._running = False
            raise

    def remove(self, watch: W) -> None:
        with self._lock:
            self._watches.discard(watch)

    def round(self, watches: list[W]) -> None:  # pragma: no cover - abstract
        """Look at every watch once, and wait as long as the next round should."""
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            with self._lock:
                watches = list(self._watches)
                if not watches:
                    self._running = False
                    return
            try:
                self.round(watches)
            except Exception:  # never let one socket stop the thread
                self.logger.exception(self.failure)
