"""wsgipipe: stream files and bodies through WSGI, and release them on every ending.

The public API lives here; submodules are implementation detail unless a name
is re-exported below. Importing wsgipipe never imports gunicorn.
"""

from __future__ import annotations

from . import sinks
from .body import Body, Observed, Outcome
from .connection import Connection, IdleTimeout
from .errormap import FileErrors
from .errors import (
    ClientGone,
    ConfigurationError,
    FileChanged,
    HTTPError,
    RangeNotSatisfiable,
    SinkError,
    WsgipipeError,
)
from .record import Transfer, current_transfer
from .response import file_response
from .static import Static
from .stream import FileStream
from .tee import Tee
from .through import Delay, Throttle, Through
from .transfer import TransferLog

__version__ = "0.1.0"

__all__ = [
    "Body",
    "ClientGone",
    "ConfigurationError",
    "Connection",
    "Delay",
    "FileChanged",
    "FileErrors",
    "FileStream",
    "HTTPError",
    "IdleTimeout",
    "Observed",
    "Outcome",
    "RangeNotSatisfiable",
    "SinkError",
    "Static",
    "Tee",
    "Throttle",
    "Through",
    "Transfer",
    "TransferLog",
    "WsgipipeError",
    "__version__",
    "current_transfer",
    "file_response",
    "sinks",
]
