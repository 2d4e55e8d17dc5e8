"""Imports flow one way (ingest -> store -> hub -> sockets): no killboard module imports, even
for type checking only, a module that imports it back, directly or through others."""

from __future__ import annotations

import ast
from pathlib import Path

from killboard.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "killboard"


def imports(path: Path) -> set[str]:
    """The killboard modules `path` imports, anywhere in the file (TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)  # from . import api, ws
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("killboard."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def test_no_import_cycles() -> None:
    graph = {p.stem: imports(p) for p in PACKAGE.glob("*.py")}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target in graph:
                visit(target, [*path, target])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []
