"""The thread behind the idle timeout and the client watch runs only while something is watched."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from wsgipipe import Pace
from wsgipipe._idle_timeout import Watchdog
from wsgipipe._watch_thread import WatchThread

NAME = "wsgipipe-test-watch"


class _Rounds(WatchThread[str]):
    thread_name = NAME
    logger = logging.getLogger("wsgipipe.test_watch_thread")
    failure = "test round failed"

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.seen: list[list[str]] = []
        self.fail = fail

    def round(self, watches: list[str]) -> None:
        self.seen.append(sorted(watches))
        time.sleep(0.01)
        if self.fail:
            raise RuntimeError("boom")


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NAME]


def _wait(condition: Callable[[], object], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_thread_starts_with_the_first_watch_and_ends_with_the_last() -> None:
    rounds = _Rounds()
    assert _threads() == []
    rounds.add("a")
    rounds.add("b")
    _wait(lambda: ["a", "b"] in rounds.seen)
    assert len(_threads()) == 1  # one thread, however many watches
    rounds.remove("a")
    rounds.remove("b")
    _wait(lambda: not _threads())
    seen = len(rounds.seen)
    rounds.add("c")  # a new watch starts a new thread
    _wait(lambda: ["c"] in rounds.seen[seen:])
    rounds.remove("c")
    _wait(lambda: not _threads())


def test_a_failing_round_is_logged_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds = _Rounds(fail=True)
    with caplog.at_level(logging.ERROR, logger="wsgipipe.test_watch_thread"):
        rounds.add("a")
        _wait(lambda: len(rounds.seen) >= 3)
        rounds.remove("a")
        _wait(lambda: not _threads())
    assert "test round failed" in caplog.text


class _Dog(Watchdog):
    thread_name = "wsgipipe-test-idle-timeout"


def test_the_idle_timeout_watchdog_leaves_no_thread_behind() -> None:
    dog = _Dog()
    left, right = socket.socketpair()
    with left, right:
        watch = dog.watch(left, Pace(0.2, None, 0.0))
        _wait(lambda: any(t.name == _Dog.thread_name for t in threading.enumerate()))
        dog.remove(watch)
        _wait(lambda: not any(t.name == _Dog.thread_name for t in threading.enumerate()))
