"""pytest plugin: wsgipipe.testing as fixtures for your own suite.

Registered through the ``pytest11`` entry point as ``wsgipipe``, so it is
loaded wherever wsgipipe and pytest are installed together. It is inert
unless asked: nothing runs for a test that requests none of its fixtures,
and the only thing it imports is :mod:`wsgipipe.testing` (gunicorn and
WebTest, from the ``test`` extra, are imported by the fixtures that need
them). Turn it off with ``-p no:wsgipipe``; load it explicitly with
``-p wsgipipe.pytest_plugin`` when plugin autoloading is disabled.

Fixtures:

``no_leaked_files``
    Fails the test (an error at its teardown, naming the paths) when a file
    opened while it ran is still open, or was freed without ``close()``.
    Skips the test, saying why, where ``/proc`` is missing.
``transfer_recorder``
    A :class:`~wsgipipe.testing.TransferRecorder` listening on the
    ``wsgipipe`` logger: every TransferLog in the app reports to it.
``run_gunicorn``
    ``run_gunicorn("pkg.module:app", worker_class="sync")`` starts a real
    gunicorn on 127.0.0.1 (any free port) and returns its
    :class:`~wsgipipe.testing.GunicornServer`; stopped after the test.

Option: ``--wsgipipe-leak-check`` (or ``wsgipipe_leak_check = true`` in the
ini file) applies ``no_leaked_files`` to every test; where ``/proc`` is
missing the report header says the check is off, instead of passing quietly.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from .testing import GunicornServer, LeakCheck, ProcUnavailable, TransferRecorder
from .testing._leaks import fd_table

__all__ = ["no_leaked_files", "run_gunicorn", "transfer_recorder"]

_CALL_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsgipipe", "wsgipipe leak checks")
    group.addoption(
        "--wsgipipe-leak-check",
        action="store_true",
        default=None,
        help="fail every test that leaves a file open (wsgipipe's no_leaked_files fixture)",
    )
    parser.addini(
        "wsgipipe_leak_check",
        type="bool",
        default=False,
        help="apply wsgipipe's no_leaked_files fixture to every test",
    )


def _suite_check(config: pytest.Config) -> bool:
    enabled = config.getoption("wsgipipe_leak_check")
    if enabled is None:
        enabled = config.getini("wsgipipe_leak_check")
    return bool(enabled)


def pytest_report_header(config: pytest.Config) -> str | None:
    if _suite_check(config) and fd_table() is None:
        return f"wsgipipe leak check: OFF, {ProcUnavailable()}"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        # A failed test keeps its locals (open files included) alive in the
        # traceback: a leak verdict on top would only be noise.
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture
def no_leaked_files(request: pytest.FixtureRequest) -> Iterator[LeakCheck]:
    """Fail the test if a file it opened is still open (or was never closed) at the end."""
    try:
        check = LeakCheck().__enter__()
    except ProcUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield check
    finally:
        report = check.finish()
    if report is not None and not request.node.stash.get(_CALL_FAILED, False):
        pytest.fail(str(report), pytrace=False)


@pytest.fixture(autouse=True)
def _wsgipipe_leak_check(request: pytest.FixtureRequest) -> None:
    # Only with --wsgipipe-leak-check / wsgipipe_leak_check = true; else a
    # no-op. Without /proc it is off for the suite (the header says so)
    # rather than skipping every test.
    enabled = _suite_check(request.config) and fd_table() is not None
    if enabled and "no_leaked_files" not in request.fixturenames:
        request.getfixturevalue("no_leaked_files")


@pytest.fixture
def transfer_recorder() -> Iterator[TransferRecorder]:
    """Every transfer record logged on the ``wsgipipe`` logger during the test."""
    recorder = TransferRecorder()
    with recorder.listening():
        yield recorder


@pytest.fixture
def run_gunicorn() -> Iterator[Callable[..., GunicornServer]]:
    """A factory starting real gunicorn servers that stop after the test."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.fail("run_gunicorn needs gunicorn: pip install 'wsgipipe[test]'", pytrace=False)
    servers: list[GunicornServer] = []

    def start(app: str, **options: Any) -> GunicornServer:
        server = GunicornServer(app, **options)
        servers.append(server)
        return server.__enter__()

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)
