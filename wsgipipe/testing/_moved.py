"""Names that left ``wsgipipe.testing.__all__`` in 0.2: they still resolve, with a warning.

They launch the project's own server matrix (waitress, werkzeug, wsgiref,
uWSGI) and are scaffolding now, in :mod:`wsgipipe.testing._matrix`.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["MOVED", "attribute"]

#: Old public name → (private module, its name there).
MOVED = {
    "ServerProcess": ("_matrix", "MatrixServer"),
    "SERVERS": ("_matrix", "SERVERS"),
    "serve": ("_matrix", "serve"),
    "fd_table": ("_leaks", "fd_table"),
}


def attribute(name: str) -> object:
    """What ``wsgipipe.testing.<name>`` was, with a DeprecationWarning."""
    if name not in MOVED:
        raise AttributeError(f"module 'wsgipipe.testing' has no attribute {name!r}")
    module, new = MOVED[name]
    warnings.warn(
        f"wsgipipe.testing.{name} is not public since wsgipipe 0.2 (it launches the project's "
        f"own server matrix); it is wsgipipe.testing.{module}.{new}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(f"{__package__}.{module}"), new)
