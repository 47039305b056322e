"""What a newcomer meets first: extras, licence, Python versions, serve without gunicorn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def project() -> dict[str, object]:
    tomllib = pytest.importorskip("tomllib")  # 3.11+; the metadata needs checking once only
    with open(REPO / "pyproject.toml", "rb") as f:
        data: dict[str, object] = tomllib.load(f)["project"]
    return data


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_the_test_extra_is_slim() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert names(extras["test"]) == {"gunicorn", "pytest", "webtest"}
    # The repo's own matrix lives in dev, which includes test.
    assert "wsgipipe[test]" in extras["dev"]
    assert {"hypothesis", "gevent", "waitress", "whitenoise", "flask", "django"} <= names(
        extras["dev"]
    )
    assert names(extras["flask"]) == {"flask"} and names(extras["django"]) == {"django"}


def test_makefile_installs_dev() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev]'" in makefile
    assert "-e '.[dev]'" in (REPO / ".ci" / "test-pythons").read_text()


def test_licence_file_matches_the_metadata() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 wsgipipe developers" in text
    assert project()["license"] == "MIT"


def test_classifiers_name_the_versions_make_test_runs() -> None:
    classifiers = project()["classifiers"]
    assert isinstance(classifiers, list)
    claimed = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)}
    makefile = (REPO / "Makefile").read_text()
    others = re.search(r"^PYTHONS \?= (.+)$", makefile, re.MULTILINE)
    assert others is not None
    others_run = set(others.group(1).split())
    # The rest is the default Python, which runs the whole suite.
    assert others_run <= claimed and len(claimed - others_run) == 1
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in claimed
    assert project()["requires-python"] == f">={min(claimed, key=lambda v: int(v[2:]))}"


def test_a_missing_python_version_is_skipped_with_a_reason() -> None:
    script = REPO / ".ci" / "test-pythons"
    run = subprocess.run(
        ["bash", str(script), "3.99"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Python 3.99 not found" in run.stdout and "skipped" in run.stdout
    env = {**os.environ, "WSGIPIPE_REQUIRE_PYTHONS": "1"}
    strict = subprocess.run(
        ["bash", str(script), "3.99"], capture_output=True, text=True, timeout=60, env=env
    )
    assert strict.returncode == 1
    assert "FAILED" in strict.stdout


# A sitecustomize that makes gunicorn impossible to import, as after `pip install wsgipipe`.
NO_GUNICORN = """
    import sys

    class NoGunicorn:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "gunicorn":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoGunicorn())
"""


def without_gunicorn(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(NO_GUNICORN))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )


def test_serve_without_gunicorn_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    # The blocker works: gunicorn is gone, wsgipipe itself still imports.
    assert without_gunicorn(tmp_path, "-c", "import wsgipipe").returncode == 0
    probe = without_gunicorn(tmp_path, "-c", "import gunicorn")
    assert "No module named 'gunicorn'" in probe.stderr
    run = without_gunicorn(tmp_path, "-m", "wsgipipe", "serve", str(tmp_path / "public"))
    assert run.returncode == 2
    assert "pip install 'wsgipipe[gunicorn]'" in run.stderr
    assert "Traceback" not in run.stderr
