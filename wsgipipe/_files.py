"""Opening files to serve: the one set of open flags, regular files only, stat keys.

A leaf: imports nothing from wsgipipe. Every place that opens a file to send
it (:class:`~wsgipipe.Static`, :func:`~wsgipipe.file_response`,
:class:`~wsgipipe.FileStream` given a path) uses :data:`OPEN_FLAGS`.
"""

from __future__ import annotations

import os
import stat

__all__ = ["OPEN_FLAGS", "open_regular", "stat_key"]

#: ``O_NONBLOCK`` keeps a FIFO from hanging open(2); it has no effect on
#: regular files (open(2)). ``O_CLOEXEC``: a child process never inherits it.
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK

StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    """``(st_dev, st_ino, st_size, st_mtime_ns)``: one version of one file."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and fstat that descriptor; regular files only.

    Anything but a regular file raises :class:`FileNotFoundError`, the same
    as a missing file.
    """
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError(2, "not a regular file", path)
    return fd, st
