"""gunicorn integration: the settings wsgipipe recommends, a runner, and the offloading worker.

This is the only package of wsgipipe that imports gunicorn, and nothing else in
wsgipipe imports it, so ``import wsgipipe`` works without gunicorn.
:class:`OffloadWorker` (``worker_class = "wsgipipe.gunicorn.OffloadWorker"``)
is gthread with file downloads handed to one sender thread per process, so
that a slow reader does not hold a thread (docs/deployment.md, "Offloading").
``gunicorn.conf.py`` in the repository carries the same settings with a
comment on each; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from ._worker import OffloadWorker

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["SETTINGS", "WORKER_CLASS", "OffloadWorker", "Runner", "logconfig", "run"]

#: The dotted name gunicorn loads the offloading worker by.
WORKER_CLASS = "wsgipipe.gunicorn.OffloadWorker"

#: What ``wsgipipe serve`` and ``gunicorn.conf.py`` use (see docs/deployment.md).
SETTINGS: dict[str, Any] = {
    "bind": "127.0.0.1:8000",
    # gthread whose file downloads go to one sender thread: a slow reader holds no thread
    "worker_class": WORKER_CLASS,
    "workers": 2,
    "threads": 8,
    "timeout": 30,  # gthread heartbeats while requests run; sync would kill long downloads
    "graceful_timeout": 30,
    "keepalive": 5,
    "accesslog": "-",
    "loglevel": "info",
}


def logconfig(level: str = "INFO") -> dict[str, Any]:
    """A ``logconfig_dict`` that shows wsgipipe's transfer lines next to gunicorn's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(name)s %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"wsgipipe": {"handlers": ["console"], "level": level, "propagate": False}},
    }


class Runner(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """Run a WSGI app object under gunicorn with the given settings (no config file read)."""

    def __init__(self, app: WSGIApplication, settings: Mapping[str, Any]) -> None:
        self.application = app
        self.settings = dict(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> WSGIApplication:
        return self.application


def run(app: WSGIApplication, **overrides: Any) -> None:
    """Serve ``app`` with :data:`SETTINGS` plus ``overrides``; returns when gunicorn stops."""
    settings = {**SETTINGS, "logconfig_dict": logconfig(), **overrides}
    Runner(app, settings).run()
