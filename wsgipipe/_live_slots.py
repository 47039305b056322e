"""One shared-memory slot file per worker process: how the live page sees all workers.

Each worker owns ``worker-<pid>.slot`` in a directory shared by the server's
processes (``/dev/shm`` when there is one). Only that worker's sampler thread
writes it, so writers never lock; readers (whichever worker serves the page)
may catch a write half done, and detect it with a sequence counter (a
seqlock) plus a CRC of the payload, then read again.

Layout: ``magic(4) seq(u64) length(u32) crc32(u32)`` then ``length`` bytes of
JSON. ``seq`` is odd while a write is in progress.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
import zlib
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = ["SLOT_SIZE", "SlotWriter", "default_directory", "read_all", "read_slot"]

MAGIC = b"WPL1"
_HEADER = struct.Struct("<4sQII")
#: Bytes per slot file; pages never written cost nothing (sparse file).
SLOT_SIZE = 1 << 20
_PAYLOAD_MAX = SLOT_SIZE - _HEADER.size
_RETRIES = 20


def default_directory() -> Path:
    """``$WSGIPIPE_LIVE_DIR``, or one keyed by the parent process (gunicorn's arbiter)."""
    chosen = os.environ.get("WSGIPIPE_LIVE_DIR")
    if chosen:
        return Path(chosen)
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
    return base / f"wsgipipe-live-{os.getuid()}-{os.getppid()}"


class SlotWriter:
    """The writing end of one process's slot file (single writer, no locks)."""

    def __init__(self, directory: Path, pid: int) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / f"worker-{pid}.slot"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, SLOT_SIZE)
            self._map = mmap.mmap(fd, SLOT_SIZE)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._seq = 0

    def write(self, payload: bytes) -> None:
        """Publish ``payload``; readers see either the old one or this one."""
        if len(payload) > _PAYLOAD_MAX:
            raise ValueError("payload larger than the slot")
        self._seq += 1  # odd: a write is in progress
        self._map[: _HEADER.size] = _HEADER.pack(MAGIC, self._seq, 0, 0)
        self._map[_HEADER.size : _HEADER.size + len(payload)] = payload
        self._seq += 1
        crc = zlib.crc32(payload)
        self._map[: _HEADER.size] = _HEADER.pack(MAGIC, self._seq, len(payload), crc)

    def close(self) -> None:
        self._map.close()


def read_slot(path: Path) -> dict[str, Any] | None:
    """The last complete payload of a slot file, or None (missing, empty, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        for _ in range(_RETRIES):
            found = _read_once(fd)
            if found is not None:
                return found
            time.sleep(0.001)  # a write is in progress: it takes microseconds
    finally:
        os.close(fd)
    return None


def _read_once(fd: int) -> dict[str, Any] | None:
    header = os.pread(fd, _HEADER.size, 0)
    if len(header) < _HEADER.size:
        return None
    magic, seq, length, crc = _HEADER.unpack(header)
    if magic != MAGIC or seq % 2 or not 0 < length <= _PAYLOAD_MAX:
        return None
    payload = os.pread(fd, length, _HEADER.size)
    again = os.pread(fd, _HEADER.size, 0)
    if again != header or zlib.crc32(payload) != crc:
        return None  # torn: the writer moved on while we read
    try:
        found = json.loads(payload)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def read_all(directory: Path, *, forget_after: float) -> list[dict[str, Any]]:
    """Every worker's payload, with ``alive`` set; forgets dead workers' old files.

    A dead worker's endings stay visible for ``forget_after`` seconds after
    its last write; then its file is removed.
    """
    found: list[dict[str, Any]] = []
    now = time.time()
    try:
        paths = sorted(directory.glob("worker-*.slot"))
    except OSError:
        return found
    for path in paths:
        payload = read_slot(path)
        pid = _pid_of(path)
        beat = float(payload.get("beat", 0)) if payload else 0.0
        alive = pid is not None and _alive(pid) and now - beat < 10.0
        if not alive and now - beat > forget_after:
            with suppress(OSError):
                path.unlink()
            continue
        if payload is not None:
            payload["alive"] = alive
            found.append(payload)
    return found


def _pid_of(path: Path) -> int | None:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: the pid was reused
    return True
