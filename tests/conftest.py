"""The suite's fixtures come from wsgipipe's own pytest plugin (wsgipipe/pytest_plugin.py).

An installed wsgipipe (``make test`` runs ``pip install -e '.[dev]'``) loads
it through its ``pytest11`` entry point; a checkout that was never
installed, or a run with plugin autoloading disabled, loads it here.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points


def _autoloaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == "wsgipipe.pytest_plugin" for ep in entry_points(group="pytest11"))


# pytester: tests/test_testing.py runs small suites against the plugin.
pytest_plugins = ["pytester"] + ([] if _autoloaded() else ["wsgipipe.pytest_plugin"])
