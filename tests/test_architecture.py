"""The layering of docs/architecture.md, checked: imports point down, and never in a circle.

Every module of the package has a layer in ``LAYERS``; a module may import
from its own layer and the layers below, never from a layer above. A new
module fails :func:`test_every_module_has_a_layer` until it is given one.
Imports under ``if TYPE_CHECKING:`` are not counted (they never run); lazy
imports inside functions are, unless ``LAZY_UPWARD`` names them with a reason.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsgipipe"

#: Layers, bottom first. Names are module paths below ``wsgipipe``.
LAYERS: dict[str, list[str]] = {
    # Leaves: import nothing from wsgipipe.
    "leaves": [
        "_errors",
        "_files",
        "_log_text",
        "_live_slots",
        "_compat",
        "_zip_format",
        "_watch_thread",
    ],
    # Pure rules and the per-request record: HTTP, statuses, pace, errors as responses.
    "rules": ["_ranges", "_http", "_record", "_error_response", "_pace", "_static_rules"],
    # The body contract and what a response says about a file.
    "bodies": ["_body", "_entity", "_h2", "_connection", "sinks"],
    # Concrete bodies: files, file parts, other sources, the client probe.
    "sources": ["_stream", "_file_open", "_file_bodies", "_sources", "_client_watch"],
    # Observing a result and handing it to the server (zero-copy or not).
    "hand-off": ["_handoff", "_upstream", "_process", "_logging"],
    # Deciding a response for one file.
    "response": ["_response"],
    # Middleware, one class per module.
    "middleware": [
        "_static",
        "_file_errors",
        "_transfer_log",
        "_tee",
        "_through",
        "_view_errors",
        "_proxy",
        "_idle_timeout",
        "_live_routes",
        "_live",
        "_live_page",
        "_zip",
    ],
    # The stacks `wsgipipe serve` and the example app run.
    "stack": ["_stack"],
    # The public front.
    "front": ["__init__"],
    # Integrations and tools on top: nothing below may import these.
    "integrations": [
        "__main__",
        "flask",
        "django",
        "prometheus",
        "otel",
        "gunicorn.__init__",
        "gunicorn._limits",
        "gunicorn._sender",
        "gunicorn._transfer",
        "gunicorn._worker",
        "pytest_plugin",
        "testing.__init__",
        "testing._gunicorn_conf",
        "testing._inprocess",
        "testing._leaks",
        "testing._loopback",
        "testing._matrix",
        "testing._moved",
        "testing._process",
        "testing._recorder",
        "testing._server_io",
        "testing._trace",
    ],
}

#: Upward imports that happen only inside a function, with the reason they may.
LAZY_UPWARD = {
    ("_live_page", "prometheus"): "the metrics route needs the optional prometheus extra",
}

#: What ``import wsgipipe`` must never load (optional extras and test tools).
HEAVY = ("gunicorn", "flask", "django", "webtest", "urllib3", "prometheus_client", "opentelemetry")

RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


@functools.cache
def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _resolve(name: str, importer: str) -> str | None:
    """``wsgipipe`` module path (below the package) that ``name`` refers to, if any."""
    known = _modules()
    for candidate in (name, f"{name}.__init__"):
        if candidate in known:
            return candidate
    return None


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, lazy) for every wsgipipe import outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".")[:-1]  # the importer's package below wsgipipe
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy.update(id(child) for child in ast.walk(node))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("wsgipipe"):
                prefix = node.module.removeprefix("wsgipipe").lstrip(".")
            else:
                continue
            targets = [f"{prefix}.{a.name}".lstrip(".") for a in node.names] + [prefix]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("wsgipipe.")]
            targets = [n.removeprefix("wsgipipe.") for n in names]
        for target in targets:
            resolved = _resolve(target, module) if target else "__init__"
            if resolved is not None and resolved != module:
                found.append((resolved, id(node) in lazy))
                break  # "from .x import y": y names a module, or else x does
    return found


@functools.cache
def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {module: _imports(module, path) for module, path in _modules().items()}


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(_modules()) - set(RANK))
    assert not missing, (
        f"give each new module a layer in LAYERS of {Path(__file__).name} "
        f"(and a line in docs/architecture.md): {missing}"
    )
    gone = sorted(set(RANK) - set(_modules()))
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"


def _upward(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    upward = []
    for module, imports in graph.items():
        for target, lazy in imports:
            if module not in RANK or target not in RANK or RANK[target] <= RANK[module]:
                continue
            if lazy and (module, target) in LAZY_UPWARD:
                continue
            upward.append(
                f"{module} ({LAYER_OF[module]}) imports {target} ({LAYER_OF[target]})"
                + (" inside a function" if lazy else "")
            )
    return upward


def test_imports_point_down() -> None:
    upward = _upward(_graph())
    assert not upward, "imports that point up a layer:\n  " + "\n  ".join(upward)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, lazy in imports if not lazy}) for m, imports in _graph().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for target in graph.get(module, []):
            if target == "__init__":
                continue  # every submodule runs the package's __init__ first
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in graph:
        cycle = visit(module, [])
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail: a leaf importing middleware.
    leaf = tmp_path / "leaf.py"
    leaf.write_text(
        "from ._static import Static\nif TYPE_CHECKING:\n    from ._stack import stack\n"
    )
    imports = _imports("_errors", leaf)
    assert imports == [("_static", False)]
    assert _upward({"_errors": imports}) == ["_errors (leaves) imports _static (middleware)"]
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from .testing import download\n")
    assert _imports("_body", lazy) == [("testing.__init__", True)]
    assert _upward({"_live_page": [("prometheus", True)]}) == []  # allowed, with a reason


@pytest.fixture(scope="module")
def loaded_by_import() -> set[str]:
    code = "import sys, wsgipipe; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("heavy", HEAVY)
def test_import_wsgipipe_loads_no_optional_dependency(
    heavy: str, loaded_by_import: set[str]
) -> None:
    assert "wsgipipe" in loaded_by_import
    assert heavy not in loaded_by_import, f"import wsgipipe loads {heavy}"
