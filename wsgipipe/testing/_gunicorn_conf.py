"""The gunicorn config :class:`~wsgipipe.testing.GunicornServer` always passes.

It keeps a ``gunicorn.conf.py`` in the working directory from changing what a
test asked for, and it says when a worker has loaded the app: gunicorn imports
the app in each worker after forking, so "Listening at" and a forked worker
do not mean the app imported (``missing.module:app`` forks a worker too).
``post_worker_init`` runs once it did, and prints the line the launcher waits
for. A config the test asked for (``WSGIPIPE_GUNICORN_CONFIG``) is executed
first, and its own ``post_worker_init`` still runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

_asked = os.environ.get("WSGIPIPE_GUNICORN_CONFIG")
if _asked and _asked.startswith("python:"):  # gunicorn's "python:module" form
    _settings: dict[str, Any] = vars(importlib.import_module(_asked[len("python:") :]))
elif _asked:
    _settings = {"__file__": _asked, "__name__": "__config__"}
    with open(_asked, encoding="utf-8") as _file:
        exec(compile(_file.read(), _asked, "exec"), _settings)
if _asked:
    globals().update({k: v for k, v in _settings.items() if not k.startswith("__")})

_theirs = globals().get("post_worker_init")

#: What a worker prints once the app is loaded; GunicornServer counts these.
BOOTED = "wsgipipe-testing: worker {pid} booted"


def post_worker_init(worker: Any) -> None:
    if _theirs is not None:
        _theirs(worker)
    print(BOOTED.format(pid=os.getpid()), file=sys.stderr, flush=True)
