"""The shape of app/, routers/ and services/ (docs/architecture.md, "Who owns what / no circles"): no import
circle between files, no module over MAX_LINES lines, and services/ free of the web framework and of the
packages above it.

Imports are read from the source (ast), every one of them: at the top, inside functions, under
`TYPE_CHECKING`, relative ones. `from pkg import name` is an import of the submodule `pkg.name` when there is
one, else of the package `pkg` (its `__init__.py`)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("app", "routers", "services")
MAX_LINES = 350
SERVICES_NEVER_IMPORT = ("fastapi", "starlette", "app", "routers")


def module_files() -> dict[str, Path]:
    """Every module of the packages by dotted name (a package by its own name, for its `__init__.py`)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "migrations" in parts:  # Alembic's revision scripts: loaded by Alembic, imported by nothing
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The dotted names `name` (the module at `path`) imports: every import statement anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in modules else source


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports (a name outside them is left out; `a.b.c` that is not
    a module stands for the closest enclosing one that is)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for target in imported(name, path, modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: modules that reach each other."""
    reach = {name: reachable(graph, name) for name in graph}
    found: list[set[str]] = []
    for name in sorted(graph):
        component = {name} | {other for other in reach[name] if name in reach[other]}
        if len(component) > 1 and component not in found:
            found.append(component)
    return found


def test_the_walker_reads_every_kind_of_import() -> None:
    graph = import_graph()
    assert "services.runs.store" in graph["services.runs.service"]  # from pkg.mod import name
    assert "services.agent" in graph["services.runs.store"]  # from pkg import name (not a submodule): __init__
    assert "services.runs.engines" in graph["services.runs"]  # a package's __init__.py
    assert "services.agent.text_calls" in graph["services.agent.answers"]  # a subpackage
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [{"a", "b", "c"}]


def test_no_import_circle_between_files() -> None:
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in found)


def test_no_module_over_the_line_limit() -> None:
    long = {
        name: count
        for name, path in module_files().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_services_never_import_the_web_framework_app_or_routers() -> None:
    modules = module_files()
    offending = {
        name: sorted(
            target for target in imported(name, path, modules) if target.split(".")[0] in SERVICES_NEVER_IMPORT
        )
        for name, path in modules.items()
        if name.split(".")[0] == "services"
    }
    assert not {name: found for name, found in offending.items() if found}


def test_no_asyncio_wait_for_in_the_gateway() -> None:
    """`asyncio.timeout` (services/aio.py says why), not `asyncio.wait_for`."""
    calls = {
        name
        for name, path in module_files().items()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr == "wait_for" and ast.unparse(node.value) == "asyncio"
    }
    assert not calls, f"asyncio.wait_for in: {sorted(calls)}"
