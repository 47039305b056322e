"""Old import paths keep working, with a DeprecationWarning that names the new home."""

from __future__ import annotations

import importlib
import sys

import pytest

import wsgipipe
from wsgipipe._compat import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_path_warns_and_forwards(old: str) -> None:
    sys.modules.pop(f"wsgipipe.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"wsgipipe.{old} is private"):
        module = importlib.import_module(f"wsgipipe.{old}")
    for target in MOVED[old]:
        new = importlib.import_module(f"wsgipipe.{target}")
        for name in getattr(new, "__all__", ()):
            assert getattr(module, name) is getattr(new, name)


def test_renamed_names_still_resolve() -> None:
    sys.modules.pop("wsgipipe.serve", None)
    with pytest.warns(DeprecationWarning):
        from wsgipipe.serve import files  # type: ignore[attr-defined]
    assert files is wsgipipe.static_app


def test_unknown_attribute_is_an_attribute_error() -> None:
    sys.modules.pop("wsgipipe.through", None)
    with pytest.warns(DeprecationWarning):
        module = importlib.import_module("wsgipipe.through")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_public_top_level_imports_without_warning() -> None:
    # The curated surface itself must not go through the old paths.
    for name in wsgipipe.__all__:
        assert getattr(wsgipipe, name) is not None
