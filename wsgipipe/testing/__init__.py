"""Test helpers: prove that an app releases its files (docs/testing.md).

* leaks: :func:`no_leaked_files` / :class:`LeakCheck`, :func:`open_files`;
* in-process clients that end a response the way real ones do:
  :func:`download`, :func:`disconnect_after`, :func:`hang_up_after`,
  :func:`stalled_client`, :func:`slow_client`, each returning a :class:`Download`;
* :class:`TransferRecorder`: the :class:`~wsgipipe.Transfer` records of a test;
* a real server: :class:`GunicornServer`, :func:`raw_request`,
  :func:`transfer_lines`, :func:`wait_for_transfer`, :func:`wait_until`,
  and :func:`trace_syscalls` for the kernel's own account.

The pytest fixtures built on these are in :mod:`wsgipipe.pytest_plugin`.
"""

from ._inprocess import Download, disconnect_after, download
from ._leaks import LeakCheck, LeakedFiles, ProcUnavailable, no_leaked_files, open_files
from ._loopback import hang_up_after, slow_client, stalled_client
from ._moved import attribute
from ._process import GunicornServer, wait_until
from ._recorder import TransferRecorder
from ._server_io import raw_request, transfer_lines, wait_for_transfer
from ._trace import TraceUnavailable, trace_syscalls

__all__ = [
    "Download",
    "GunicornServer",
    "LeakCheck",
    "LeakedFiles",
    "ProcUnavailable",
    "TraceUnavailable",
    "TransferRecorder",
    "disconnect_after",
    "download",
    "hang_up_after",
    "no_leaked_files",
    "open_files",
    "raw_request",
    "slow_client",
    "stalled_client",
    "trace_syscalls",
    "transfer_lines",
    "wait_for_transfer",
    "wait_until",
]


def __getattr__(name: str) -> object:
    return attribute(name)  # names that were public before 0.2, with a warning
