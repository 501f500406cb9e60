"""The Dataverse emulator is laid out like Partner Center's (issue 15, "The emulators as one kit"):
its state lives in ``state.py``, ``app.py`` only serves HTTP, and nothing inside the package
imports ``app`` back, so its modules import one another without a circle.

Read from the source (``ast``), so an import under ``if TYPE_CHECKING:`` counts as much as any.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "sandbox.dataverse"
ROOT = Path(__file__).resolve().parents[2] / "sandbox" / "dataverse"
MODULES = {path.stem for path in ROOT.glob("*.py")}

# Deliberate deferrals, imported inside a function rather than at import time, with the reason.
DEFERRED = {
    ("schema", "standard"): "standard.py builds its tables from schema.py's Column and Table",
}


def _module(name: str) -> str | None:
    """The package's module a dotted name lies in (``__init__`` for the package's own names)."""
    if name == PACKAGE:
        return "__init__"
    if not name.startswith(PACKAGE + "."):
        return None
    first = name.removeprefix(PACKAGE + ".").split(".")[0]
    return first if first in MODULES else "__init__"


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules an import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        # ``from .x import y`` inside the package is ``from sandbox.dataverse.x import y``
        module = ".".join(filter(None, (PACKAGE if node.level else "", node.module)))
        if module == PACKAGE:  # ``from sandbox.dataverse import push``: push, or __init__'s name
            names = [f"{module}.{alias.name}" for alias in node.names]
        else:
            names = [module]
    return {found for name in names if (found := _module(name)) is not None}


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        tree = ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(node) - {module}
        graph[module] = {target for target in edges if (module, target) not in DEFERRED}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def test_only_the_package_init_imports_the_http_app() -> None:
    importers = {module for module, targets in _imports().items() if "app" in targets}
    assert importers == {"__init__"}


def test_the_handlers_name_the_state_not_the_app() -> None:
    graph = _imports()
    for module in ("api", "batch", "metadata", "control"):
        assert "state" in graph[module], module
    assert graph["state"] <= {"limits", "schema", "store"}  # no handler, no push, no app


def test_the_package_has_no_import_circle() -> None:
    assert _cycle(_imports()) is None


def test_the_deferred_imports_are_still_inside_a_function() -> None:
    """A deferral kept only while it is one (and the circle it avoids is real)."""
    for importer, target in DEFERRED:
        tree = ast.parse((ROOT / f"{importer}.py").read_text(encoding="utf-8"))
        top_level = {
            name
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in _imported(node)
        }
        assert target not in top_level, (importer, target)
        assert importer in _imports()[target], (target, importer)  # the circle it avoids


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"api": {"app"}, "app": {"batch"}, "batch": {"api"}}) == [
        "api",
        "app",
        "batch",
        "api",
    ]
