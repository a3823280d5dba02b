"""The package's shape: no import cycle between its modules (imports inside functions counted), none too long."""

import ast
from pathlib import Path

import backup_api

PACKAGE = Path(backup_api.__file__).parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["backup_api", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the module imports anywhere in its text, functions included.

    `from a import b` imports a.b when that is a module, else a itself (b is a name a defines);
    a package's parents, which Python imports first, are not counted: only what the text asks for.
    """
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 steps
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of graph as the list of its modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once every path from it is walked

    def walk(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                return [*path[path.index(other):], other] if other in path else [*path, other]
            if other not in state:
                found = walk(other, [*path, other])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = walk(module, [module])
            if found:
                return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["backup_api.app"] >= {"backup_api.storage", "backup_api.standin"}  # the walk sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle_made_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert _cycle(graph) is None
    graph["c"] = {"a"}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    source = "def late():\n    from backup_api import app\n"
    assert "backup_api.app" in _imports_in(source)


def _imports_in(source: str) -> set[str]:
    """What imports_of finds in source, as if it were a module of the package."""
    path = Path(__file__).parent / "_shape_probe.py"
    path.write_text(source)
    try:
        return imports_of("backup_api.probe", path, _modules())
    finally:
        path.unlink()


def test_every_module_reads_in_one_sitting():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
