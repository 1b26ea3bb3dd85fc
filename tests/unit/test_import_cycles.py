"""No module of `sandhive` imports a module that imports it back (issue 13: arrows point one way).

The graph comes from an AST walk over src/sandhive, so no module is executed. An edge is any `import x` or
`from x import y` anywhere in a module, at its top or inside a function: a function-level import is a cycle put off
until the call, not removed. Imports under `if TYPE_CHECKING:` are left out (they never run). An edge to a package
means its `__init__`; the implicit import of a module's parent packages is not an edge (Python initialises a
package before its children, so that direction cannot re-enter a half-made module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "sandhive"


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package) for every .py file under `root`."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, skipping the bodies of `if TYPE_CHECKING:`."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _imports(child)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child)


def _edges(name: str, path: Path, is_package: bool, modules: dict[str, tuple[Path, bool]]) -> list[Edge]:
    package = name if is_package else name.rpartition(".")[0]
    edges: list[Edge] = []
    for stmt in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            edges += [Edge(alias.name, stmt.lineno) for alias in stmt.names if alias.name in modules]
            continue
        if stmt.level:
            base = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
            source = ".".join([*base, stmt.module] if stmt.module else base)
        else:
            source = stmt.module or ""
        for alias in stmt.names:
            submodule = f"{source}.{alias.name}"
            if submodule in modules:  # `from pkg import module`
                edges.append(Edge(submodule, stmt.lineno))
            elif source in modules:  # `from module import name`
                edges.append(Edge(source, stmt.lineno))
    return [edge for edge in edges if edge.target != name]


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """Module → {module it imports: line of the first such import}."""
    modules = _modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        targets: dict[str, int] = {}
        for edge in _edges(name, path, is_package, modules):
            targets.setdefault(edge.target, edge.line)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, staying inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 100 and "sandhive.api.app" in graph  # the walk saw the package
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, cycle) for cycle in found)


def test_the_walk_finds_a_cycle_and_ignores_type_checking_imports(tmp_path: Path) -> None:
    """The checker itself: a function-level import back is a cycle; a TYPE_CHECKING import is not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import y\n")
    (package / "d.py").write_text("import pkg.c\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b": 1} and graph["pkg.b"] == {"pkg.a": 2} and graph["pkg.c"] == {}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
