"""Showing wsgipipe's transfer lines: a one-line opt-in and a JSON formatter.

wsgipipe logs on the ``wsgipipe`` logger tree (``wsgipipe.transfer_log`` for
the one line per response, ``wsgipipe.file_errors`` for mapped errors) and,
as a library should, adds no handler of its own. Plain gunicorn configures
only its own loggers, so those INFO lines go nowhere until someone gives
them a handler: :func:`log_to_stderr` is that one line.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from json import dumps
from typing import IO, Any

from ._record import Transfer

__all__ = ["PLAIN_FORMAT", "JsonFormatter", "log_to_stderr"]

#: The same shape as gunicorn's own lines, so both read as one log.
PLAIN_FORMAT = "%(asctime)s [%(process)d] %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per log record, for log pipelines.

    A transfer line (a record with ``extra={"transfer": Transfer}``, as
    :class:`wsgipipe.TransferLog` writes it) becomes its fields: ``method``,
    ``path``, ``status``, ``outcome``, ``bytes_sent``, ``length``,
    ``duration``, ``via``, ``reason``, ``notes`` and ``error``. Any other
    record keeps its ``message`` (and ``exception`` text, if any).
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=timezone.utc)
        data: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        transfer = getattr(record, "transfer", None)
        if isinstance(transfer, Transfer):
            data.update(transfer_fields(transfer))
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return dumps(data, ensure_ascii=False)


def transfer_fields(transfer: Transfer) -> dict[str, Any]:
    """A transfer record as plain JSON-ready values."""
    notes = dict(transfer.notes)
    via = notes.pop("via", None)
    error = transfer.error
    return {
        "method": transfer.method,
        "path": transfer.path,
        "status": transfer.status,
        "outcome": transfer.outcome,
        "bytes_sent": transfer.bytes_sent,
        "length": transfer.length,
        "duration": round(transfer.duration, 6),
        "via": via,
        "reason": transfer.reason,
        "notes": notes,
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`log_to_stderr` installs; a second call replaces it."""


def log_to_stderr(
    level: int | str = logging.INFO, *, json: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Print wsgipipe's transfer lines (and its error reports) on stderr.

    Gives the ``wsgipipe`` logger one handler, sets its level and stops its
    records from also reaching the root logger, so each line prints once.
    Calling it again replaces that handler instead of adding another. With
    ``json=True`` each line is a JSON object (:class:`JsonFormatter`).
    Returns the handler.
    """
    logger = logging.getLogger("wsgipipe")
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(PLAIN_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
