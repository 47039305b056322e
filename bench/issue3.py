"""Contenders that need issue 3 (disconnect detection and the idle timeout).

Each builder raises ImportError while its feature is not in wsgipipe, which
the harness reports as "not available yet" instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def _slow_wsgipipe() -> WSGIApplication:
    """A FileStream through wsgipipe's slow-through ``Delay`` (5 s per chunk)."""
    from wsgipipe import Delay, TransferLog  # type: ignore[attr-defined,unused-ignore]

    from .apps import SLOW_DELAY, stream_only

    app: WSGIApplication = TransferLog(Delay(stream_only, SLOW_DELAY))
    return app


def _idle_wsgipipe() -> WSGIApplication:
    """A FileStream behind wsgipipe's ``IdleTimeout``, zero-copy kept."""
    from wsgipipe import IdleTimeout, TransferLog  # type: ignore[attr-defined,unused-ignore]

    from .apps import IDLE_TIMEOUT, stream_only

    app: WSGIApplication = TransferLog(IdleTimeout(stream_only, IDLE_TIMEOUT))
    return app


BUILDERS: dict[str, Callable[[], WSGIApplication]] = {
    "slow_wsgipipe": _slow_wsgipipe,
    "idle_wsgipipe": _idle_wsgipipe,
}
