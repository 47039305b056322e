"""docs/api.md is the public API: it lists exactly the ``__all__`` names, and docs use only those.

The ``__all__`` lists are read from the source (no optional dependency is
imported), so a name exported anywhere fails here until docs/api.md has a
line for it, and the failure says which line to add where.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from wsgipipe import FileStream, TransferLog
from wsgipipe.testing import disconnect_after, download

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "wsgipipe"
API = REPO / "docs" / "api.md"
#: Public modules that are tools rather than API: they have no section.
NOT_API = {"wsgipipe.__main__", "wsgipipe.pytest_plugin"}


def _public_modules() -> dict[str, Path]:
    """``wsgipipe`` and every submodule or subpackage without a leading underscore."""
    found = {"wsgipipe": PACKAGE / "__init__.py"}
    for path in sorted(PACKAGE.iterdir()):
        if path.is_file() and path.suffix != ".py":
            continue  # py.typed
        name = path.stem if path.suffix == ".py" else path.name
        source = path / "__init__.py" if path.is_dir() else path
        if name.startswith("_") or not source.is_file() or f"wsgipipe.{name}" in NOT_API:
            continue
        found[f"wsgipipe.{name}"] = source
    return found


def _all(source: Path) -> list[str]:
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{source} has no literal __all__")


def _sections(text: str) -> dict[str, list[str]]:
    """Names listed (``- `Name...``) under each ``## `module``` heading."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        heading = re.match(r"## `([\w.]+)`$", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
        elif line.startswith("## "):
            current = None
        elif current is not None and (entry := re.match(r"- `(\w+)", line)):
            current.append(entry.group(1))
    return sections


def test_api_md_lists_exactly_the_public_names() -> None:
    sections = _sections(API.read_text(encoding="utf-8"))
    problems = []
    for module, source in _public_modules().items():
        if module not in sections:
            problems.append(
                f"{module} is public (no underscore): add a section '## `{module}`' to "
                f"docs/api.md with one line per name in its __all__, or rename it with a '_'"
            )
            continue
        exported, listed = _all(source), sections[module]
        for name in sorted(set(exported) - set(listed)):
            problems.append(
                f"{module}.{name} is in __all__ but not in docs/api.md: add under "
                f"'## `{module}`' the line '- `{name}`: <what it is, in one line>'"
            )
        for name in sorted(set(listed) - set(exported)):
            problems.append(
                f"docs/api.md lists {module}.{name}, which is not in {module}.__all__: "
                "remove the line, or export the name"
            )
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            problems.append(f"docs/api.md lists {module}.{name} twice")
    for module in sorted(set(sections) - set(_public_modules())):
        problems.append(f"docs/api.md has a section for {module}, which is not a public module")
    assert not problems, "\n".join(problems)


def test_the_check_names_what_to_add() -> None:
    text = "## `wsgipipe.sinks`\n\n- `stdout()`: x\n- `Nope`: y\n## Other\n- `Skipped`: z\n"
    assert _sections(text) == {"wsgipipe.sinks": ["stdout", "Nope"]}


# -- the extension point example -------------------------------------------------------
def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _extension_example() -> dict[str, object]:
    text = API.read_text(encoding="utf-8")
    section = text.split("### The extension point", 1)[1].split("\n## ", 1)[0]
    (code,) = _python_blocks(section)
    namespace: dict[str, object] = {}
    exec(compile(code, f"{API}:extension point", "exec"), namespace)
    return namespace


def _file_app(path: Path):  # type: ignore[no-untyped-def]
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        stream = FileStream(path, chunk_size=4096)
        start_response("200 OK", [("Content-Length", str(stream.size))])
        return stream

    return app


def test_extension_example_counts_lines_and_sees_the_ending(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b"line %04d\n" % i for i in range(2000)))  # 20000 B
    reports: list[tuple[object, ...]] = []
    count_lines = _extension_example()["CountLines"]
    app = count_lines(_file_app(path), lambda *fact: reports.append(fact))  # type: ignore[operator]

    assert download(app, "/lines.txt").received == path.read_bytes()
    assert reports == [("/lines.txt", 2000, "finished", 20000)]

    result = disconnect_after(TransferLog(app), 8192, "/lines.txt")
    assert result.received == path.read_bytes()[:8192]
    # The transform saw the third chunk too, whose write failed: 3 * 4096 B.
    assert reports[-1] == ("/lines.txt", 3 * 4096 // 10, "aborted", 8192)


# -- docs import only public names ----------------------------------------------------
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _private_imports(text: str) -> list[str]:
    public = {module: set(_all(source)) for module, source in _public_modules().items()}
    public["wsgipipe.pytest_plugin"] = {"no_leaked_files", "run_gunicorn", "transfer_recorder"}
    found = []
    for block in _python_blocks(text):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsgipipe"):
                module = node.module or ""
                if module not in public:
                    found.append(f"from {module} import ...")
                    continue
                found += [
                    f"from {module} import {alias.name}"
                    for alias in node.names
                    if alias.name not in public[module]
                ]
            elif isinstance(node, ast.Import):
                found += [
                    f"import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("wsgipipe") and alias.name not in public
                ]
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_examples_import_only_public_names(document: Path) -> None:
    found = _private_imports(document.read_text(encoding="utf-8"))
    assert not found, (
        f"{os.path.relpath(document, REPO)} imports names that are not public "
        f"(not in an __all__ listed in docs/api.md): {found}"
    )


def test_the_import_check_sees_a_private_path() -> None:
    text = "```python\nfrom wsgipipe.through import Delay\nfrom wsgipipe import Static, _x\n```\n"
    assert _private_imports(text) == [
        "from wsgipipe.through import ...",
        "from wsgipipe import _x",
    ]
