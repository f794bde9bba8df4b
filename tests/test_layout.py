"""The layout's rules, read from the source: schemas are a leaf, no import cycle, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

PACKAGES = (ROOT / "src", ROOT / "launchers")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package and the Hydra plugins."""
    found = {}
    for base in PACKAGES:
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that `name` imports anywhere in its file (module level or inside functions), but for
    annotations only."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:` (imports for annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def plugin_and_core(component: list[str]) -> bool:
    """Hydra's pattern: a plugin class module imports its `_core` inside launch()/sweep(), and `_core` imports
    the class back."""
    if len(component) != 2:
        return False
    core = [m for m in component if m.endswith("._core")]
    return len(core) == 1 and all(m.startswith("hydra_plugins.") for m in component)


def test_no_import_cycle_outside_hydras_plugin_and_core_pattern() -> None:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert [c for c in cycles(graph) if not plugin_and_core(c)] == []


def test_schemas_are_a_leaf_that_imports_nothing_else_of_sweeps() -> None:
    known = modules()
    schema = {name: path for name, path in known.items() if name.startswith("sweeps.schema")}
    assert "sweeps.schema" in schema
    outside = {
        name: sorted(d for d in imports(name, path, known) if not d.startswith("sweeps.schema"))
        for name, path in schema.items()
    }
    assert {name: deps for name, deps in outside.items() if deps} == {}


def test_no_module_is_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert plugin_and_core(["hydra_plugins.x._core", "hydra_plugins.x.plugin"])
    assert not plugin_and_core(["sweeps.config", "sweeps.deploy"])
