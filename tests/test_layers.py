"""Imports follow the stages the data passes through: no module imports one from a later stage
(killboard/__init__.py lists them), and no killboard module imports, even for type checking only,
a module that imports it back, directly or through others."""

from __future__ import annotations

import ast
from pathlib import Path

import killboard
from killboard.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "killboard"


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The killboard modules `path` imports, anywhere in the file (TYPE_CHECKING blocks too)."""
    name = module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        elif (node.module or "").startswith("killboard"):
            target = node.module or ""
        else:
            continue
        for alias in node.names:  # `from . import api` names a module; `from .store import Store` does not
            candidate = f"{target}.{alias.name}"
            found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m in MODULES}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def stage(module: str) -> int:
    """The module's place in killboard.STAGES (the package's own docstring names them)."""
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "killboard"
    for rank, members in enumerate(killboard.STAGES):
        if key in members:
            return rank
    raise AssertionError(f"{module} is in no stage of killboard.STAGES")


def test_every_module_has_a_stage() -> None:
    for module in MODULES:
        stage(module)


def test_no_import_from_a_later_stage() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        for target in imports(path):
            if stage(target) > stage(module):
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_no_import_cycles() -> None:
    graph = {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}
    # A package's __init__ is imported on the way to its modules; it must not import them back.
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
