"""The rooms of the package: production code never reaches into the sandbox, and no two rooms import
each other in a circle. Read from the source (every import, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "retail_platform"
# What may import the sandbox: the sandbox itself and the operator's command line, which routes
# `retail sandbox|up|serve|dashboard|generate|live|pipeline` to it.
SANDBOX_USERS = {"sandbox", "cli.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def room_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def production_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        if room_of(path) not in SANDBOX_USERS:
            yield path
    yield from sorted((ROOT / "plugins").rglob("*.py"))
    yield from sorted((ROOT / "dags").glob("*.py"))


def test_nothing_that_runs_in_production_imports_the_sandbox():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.startswith("retail_platform.sandbox")
        )
        for path in production_files()
    }
    offenders = {path: modules for path, modules in offenders.items() if modules}
    assert offenders == {}, f"production code imports the sandbox: {offenders}"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "task.py"
    module.write_text(
        "def run():\n    from retail_platform.sandbox.mariadb import LocalMariaDB\n    return LocalMariaDB\n"
    )
    assert "retail_platform.sandbox.mariadb" in imported_modules(module)


def room_graph() -> dict[str, set[str]]:
    rooms = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir() if not p.name.startswith("__")}
    graph: dict[str, set[str]] = {room: set() for room in rooms}
    for path in PACKAGE.rglob("*.py"):
        here = room_of(path).removesuffix(".py")
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "retail_platform" and len(parts) > 1 and parts[1] in rooms and parts[1] != here:
                graph[here].add(parts[1])
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_rooms_do_not_import_each_other_in_a_circle():
    cycle = cycle_in(room_graph())
    assert cycle is None, f"rooms import each other in a circle: {' -> '.join(cycle)}"


def test_the_circle_check_finds_a_circle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def module_graph() -> dict[str, set[str]]:
    """Module to the package's modules it imports (a package's ``__init__`` left out: importing a
    name from a package is not a dependency on its siblings)."""

    def dotted(path: Path) -> str:
        return ".".join(("retail_platform", *path.relative_to(PACKAGE).with_suffix("").parts))

    modules = {dotted(p): p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    return {
        name: {m for m in imported_modules(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_modules_do_not_import_each_other_in_a_circle():
    """Within a room too: two modules that need each other are one module, or share a third."""
    cycle = cycle_in(module_graph())
    assert cycle is None, f"modules import each other in a circle: {' -> '.join(cycle)}"
