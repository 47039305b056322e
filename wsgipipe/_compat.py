"""Old import paths, kept working with a DeprecationWarning.

Before 0.2 the implementation modules had public-looking names
(``wsgipipe.through``, ``wsgipipe.serve``, ...) and the docs imported from
some of them. They are private now; importing an old path still works, warns
once, and returns a module that forwards every attribute to the new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["MOVED", "install"]

#: Old public-looking module → the private modules that now hold its names.
MOVED: dict[str, tuple[str, ...]] = {
    "body": ("_body",),
    "connection": ("_connection", "_idle_timeout"),
    "errormap": ("_file_errors", "_error_response"),
    "errors": ("_errors",),
    "http": ("_http",),
    "record": ("_record",),
    "response": ("_response", "_entity", "_file_bodies", "_files"),
    "serve": ("_stack",),
    "static": ("_static",),
    "stream": ("_stream",),
    "tee": ("_tee",),
    "through": ("_through",),
    "transfer": ("_transfer_log",),
}

#: Names that were renamed when their module moved.
RENAMED: dict[tuple[str, str], str] = {("serve", "files"): "static_app"}


class _Forwarding(types.ModuleType):
    """A stand-in for an old module: every attribute comes from the new modules."""

    def __init__(self, name: str, old: str, targets: Sequence[str]) -> None:
        super().__init__(name)
        self._old = old
        self._targets = targets

    def __getattr__(self, attr: str) -> object:
        attr = RENAMED.get((self._old, attr), attr)
        for target in self._targets:
            module = importlib.import_module(f"{__package__}.{target}")
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Forwarding(spec.name, self.old, MOVED[self.old])

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} is private since wsgipipe 0.2; import from 'wsgipipe' instead",
            DeprecationWarning,
            stacklevel=2,
        )


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __package__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(old))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
