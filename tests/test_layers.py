"""The package's layering, read from its own source: only the command line imports the pipeline
(run.py), only `python -m provisioner` imports the command line, and no modules import each other
round in a circle (a lower module reaching up into one above it makes such a circle)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "provisioner"
PIPELINE = "provisioner.run"
COMMAND_LINE = "provisioner.cli"
ENTRY_POINT = "provisioner.__main__"


def module_name(path: Path) -> str:
    """provisioner/ledger.py -> provisioner.ledger; provisioner/cli/__init__.py -> ...cli."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> Iterator[str]:
    """The package's modules that module `name` imports, anywhere in it (TYPE_CHECKING too)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES and not node.level:
            for alias in node.names:  # `from provisioner import timestamps` names a module
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in MODULES else node.module


GRAPH = {name: sorted(set(imported(name))) for name in MODULES}


def within(name: str, package: str) -> bool:
    """`name` is the module or package `package`, or inside it."""
    return name == package or name.startswith(package + ".")


def test_the_walk_sees_the_package() -> None:
    assert PIPELINE in MODULES
    assert "provisioner.ledger" in GRAPH[PIPELINE]  # an import the pipeline is known to make
    assert any(within(target, COMMAND_LINE) for target in GRAPH[ENTRY_POINT])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_command_line_imports_the_pipeline(name: str) -> None:
    if within(name, COMMAND_LINE):
        return
    assert PIPELINE not in GRAPH[name]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_entry_point_imports_the_command_line(name: str) -> None:
    if name == ENTRY_POINT or within(name, COMMAND_LINE):
        return
    assert not [target for target in GRAPH[name] if within(target, COMMAND_LINE)]


def test_no_modules_import_each_other_in_a_circle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while its imports are walked, then "done"

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in GRAPH[name]:
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name, [name])
    assert cycles == []
