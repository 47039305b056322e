"""gunicorn settings for streaming files with wsgipipe (``gunicorn examples.app:app``)."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
threads = 8
workers = 2
loglevel = "info"
accesslog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"wsgipipe": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
