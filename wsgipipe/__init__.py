"""wsgipipe: stream files and bodies through WSGI, and release them on every ending.

The public API is what this module exports (``__all__``) plus the documented
public submodules: :mod:`wsgipipe.sinks`, :mod:`wsgipipe.testing`,
:mod:`wsgipipe.gunicorn`, :mod:`wsgipipe.flask` and :mod:`wsgipipe.django`.
Modules whose names start with an underscore are implementation detail.
Importing wsgipipe never imports gunicorn, Flask or Django.

:class:`Body` and :class:`Observed` are the extension point for writing your
own body middleware (docs/api.md); the rest of the surface is for using
wsgipipe, not extending it.
"""

from __future__ import annotations

from . import _compat, sinks
from ._body import Body, Observed, Outcome
from ._connection import Connection
from ._errors import (
    ClientGone,
    ConfigurationError,
    FileChanged,
    HTTPError,
    RangeNotSatisfiable,
    SinkError,
    WsgipipeError,
)
from ._file_errors import FileErrors
from ._idle_timeout import IdleTimeout, MinRate
from ._logging import JsonFormatter, log_to_stderr
from ._pace import DEFAULT_MIN_RATE, Pace
from ._process import ProcessFailed, ProcessStream, process_response
from ._proxy import Proxy
from ._record import Transfer, current_transfer
from ._response import file_response
from ._stack import DEFAULT_IDLE_TIMEOUT, folder_app, stack, static_app
from ._static import Static
from ._stream import FileStream
from ._tee import Tee
from ._through import Delay, Throttle, Through
from ._transfer_log import TransferLog
from ._upstream import UpstreamError, UpstreamStream, UpstreamTimeout
from ._zip import ZipStream, zip_response

__version__ = "0.2.0"

_compat.install()

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MIN_RATE",
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
    "JsonFormatter",
    "MinRate",
    "Observed",
    "Outcome",
    "Pace",
    "ProcessFailed",
    "ProcessStream",
    "Proxy",
    "RangeNotSatisfiable",
    "SinkError",
    "Static",
    "Tee",
    "Throttle",
    "Through",
    "Transfer",
    "TransferLog",
    "UpstreamError",
    "UpstreamStream",
    "UpstreamTimeout",
    "WsgipipeError",
    "ZipStream",
    "__version__",
    "current_transfer",
    "file_response",
    "folder_app",
    "log_to_stderr",
    "process_response",
    "sinks",
    "stack",
    "static_app",
    "zip_response",
]
