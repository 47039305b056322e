"""Find files a block of code opened and did not close; read ``/proc/<pid>/fd``.

Two witnesses, because neither is enough alone (pallets/werkzeug#1785):

* ``/proc/self/fd`` before and after: a descriptor that appeared during the
  block and still points at a file is a leak, whatever Python thinks;
* ``ResourceWarning``: CPython warns when a file object is freed unclosed.
  Reference counting often frees it quietly enough that a quick test passes.
  A ``gc.collect()`` at the end gives files stuck in reference cycles the
  same chance to be seen.

Where ``/proc`` does not exist (macOS, Windows) the first witness is blind, so
a check that needs it raises :class:`ProcUnavailable` instead of passing.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "LeakCheck",
    "LeakedFiles",
    "ProcUnavailable",
    "fd_count",
    "fd_table",
    "no_leaked_files",
    "open_files",
]

#: Where the kernel lists open descriptors (a module attribute so that tests
#: can show what happens on a system without it).
PROC = "/proc"
# io objects name their file in the warning: name='/a/path' or name=7 (a bare fd).
_NAMED = re.compile(r"name=(?:'((?:[^'\\]|\\.)*)'|(\d+))")


class ProcUnavailable(RuntimeError):
    """``/proc/<pid>/fd`` is missing here, so open descriptors cannot be seen."""

    def __init__(self) -> None:
        super().__init__(
            f"{PROC}/self/fd does not exist on this system: open files cannot be checked"
            " (wsgipipe's descriptor checks need Linux's /proc)"
        )


def _require_proc() -> None:
    if not os.path.isdir(f"{PROC}/self/fd"):
        raise ProcUnavailable


def fd_table() -> dict[int, str] | None:
    """This process's descriptors and what they point at; None without ``/proc``."""
    fd_dir = f"{PROC}/self/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    table: dict[int, str] = {}
    for name in names:
        try:
            table[int(name)] = os.readlink(f"{fd_dir}/{name}")
        except (OSError, ValueError):
            continue  # closed while we looked (the listing's own descriptor)
    return table


def open_files(pid: int | str = "self", under: str | os.PathLike[str] | None = None) -> list[str]:
    """Paths a process has open, read from ``/proc/<pid>/fd``.

    With ``under``, only paths inside that directory (resolved). Sockets,
    pipes and descriptors that vanish while we look are skipped; a process
    that is gone has no files. Raises :class:`ProcUnavailable` where there
    is no ``/proc`` at all, rather than reporting "nothing open".
    """
    _require_proc()
    fd_dir = Path(f"{PROC}/{pid}/fd")
    prefix = os.path.realpath(under) + os.sep if under is not None else None
    found: list[str] = []
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if prefix is None or target.startswith(prefix) or target == prefix[:-1]:
            found.append(target)
    return sorted(found)


def fd_count(pid: int | str) -> int | None:
    """How many descriptors ``pid`` has open; None once it is gone.

    Raises :class:`ProcUnavailable` where there is no ``/proc`` at all.
    """
    _require_proc()
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def no_leaked_files(under: str | os.PathLike[str] | None = None) -> LeakCheck:
    """``with no_leaked_files(tmp_path): ...`` fails if the block leaves a file open."""
    return LeakCheck(under)


class LeakedFiles(AssertionError):
    """Files opened inside a :class:`LeakCheck` were not closed.

    ``still_open`` holds the paths still open at the end; ``unclosed`` those
    freed without ``close()`` (from ``ResourceWarning``; the warning's text
    when it names no file, such as an unclosed socket).
    """

    def __init__(self, still_open: list[str], unclosed: list[str]) -> None:
        self.still_open = still_open
        self.unclosed = unclosed
        lines: list[str] = []
        if still_open:
            lines.append(f"{len(still_open)} file(s) opened during the check are still open:")
            lines += [f"  {path}" for path in still_open]
        if unclosed:
            lines.append(f"{len(unclosed)} file(s) were freed without close() (ResourceWarning):")
            lines += [f"  {what}" for what in unclosed]
        super().__init__("\n".join(lines))

    @property
    def paths(self) -> list[str]:
        """Every leak either witness saw, each once."""
        return self.still_open + [p for p in self.unclosed if p not in self.still_open]


class LeakCheck:
    """Context manager failing with :class:`LeakedFiles` if the block leaked a file.

    ``under`` limits the check to files inside one directory (resolved), which
    keeps unrelated activity of other threads out of the verdict. Sockets and
    pipes are not files and are ignored. If the block itself raised, that
    exception wins and the leak report is only attached to it as a note.

    Without ``/proc`` entering raises :class:`ProcUnavailable`, unless
    ``warnings_only=True`` accepts ``ResourceWarning`` as the only witness.
    """

    def __init__(
        self, under: str | os.PathLike[str] | None = None, *, warnings_only: bool = False
    ) -> None:
        self.under = os.path.realpath(under) if under is not None else None
        self.warnings_only = warnings_only
        self.before: dict[int, str] | None = None
        self.warned: list[str] = []
        self._catcher: warnings.catch_warnings[None] | None = None
        self._showwarning: Any = None

    # -- the two witnesses ------------------------------------------------
    def __enter__(self) -> LeakCheck:
        self.before = fd_table()
        if self.before is None and not self.warnings_only:
            raise ProcUnavailable
        self.warned = []
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        # "always" beats an "error" filter (pytest -W error::ResourceWarning):
        # a warning raised inside __del__ would only be printed, not failed.
        warnings.simplefilter("always", ResourceWarning)
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._witness
        return self

    def _witness(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, ResourceWarning):
            self.warned.append(_describe(str(message)))
        else:
            self._showwarning(message, category, filename, lineno, file, line)

    def leaked(self) -> list[str]:
        """Paths opened since ``__enter__`` and open now (empty without ``/proc``)."""
        now = fd_table()
        if now is None or self.before is None:
            return []
        new = [path for fd, path in now.items() if self.before.get(fd) != path]
        return sorted(path for path in new if self._counts(path))

    def _counts(self, path: str) -> bool:
        if not path.startswith("/"):
            return False  # socket:[…], pipe:[…], anon_inode:[…]
        if self.under is None:
            return True
        real = path.removesuffix(" (deleted)")
        return real == self.under or real.startswith(self.under + os.sep)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        report = self.finish()
        if report is None:
            return
        if exc is None:
            raise report
        if sys.version_info >= (3, 11):
            exc.add_note(str(report))

    def finish(self) -> LeakedFiles | None:
        """End the check: the leaks it found, or None. ``__exit__`` raises them."""
        still_open = self.leaked()
        try:
            gc.collect()  # let files held only by reference cycles warn now
        finally:
            if self._catcher is not None:
                self._catcher.__exit__(None, None, None)
                self._catcher = None
        seen = [w for w in dict.fromkeys(self.warned) if w not in still_open]
        unclosed = [w for w in seen if self.under is None or self._counts(w)]
        return LeakedFiles(still_open, unclosed) if still_open or unclosed else None


def _describe(message: str) -> str:
    """The path a ``ResourceWarning`` is about, or its text if it names none."""
    match = _NAMED.search(message)
    if match is None:
        return message
    if match.group(1) is not None:
        return match.group(1)
    try:
        # name=7: the file was opened from a descriptor (os.open, FileStream).
        # The warning comes before the descriptor is closed, so it still resolves.
        return os.readlink(f"{PROC}/self/fd/{match.group(2)}")
    except OSError:
        return message
