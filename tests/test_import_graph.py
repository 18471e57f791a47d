"""Imports run one way (design §8): no import circle among coordinator/ modules, counting imports
anywhere in a file (one inside a function still makes a circle), and only the entry points
(endpoints, the sweeper) import the cross-slice transitions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRANSITIONS = "coordinator.transitions"


def get_import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (anywhere in the file)."""
    base = package_dir.parent
    modules = {
        ".".join(p.relative_to(base).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package_dir.rglob("*.py")
    }
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                # `from pkg import sub` needs the submodule; any other name needs pkg itself
                names = subs + ([node.module] if any(s not in modules for s in subs) else [])
            graph[module].update(n for n in names if n in modules and n != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


@pytest.mark.parametrize("package", ["coordinator", "protocol", "sdk", "cli"])
def test_no_import_circle(package):
    cycles = find_cycles(get_import_graph(ROOT / package))
    assert not cycles, f"import circles in {package}/: {cycles}"


def test_only_entry_points_import_the_transitions():
    graph = get_import_graph(ROOT / "coordinator")
    importers = {m for m, imported in graph.items() if TRANSITIONS in imported}
    allowed = {m for m in importers if m.endswith(".endpoints") or m == "coordinator.sweeper"}
    assert importers == allowed, (
        f"slices import the transitions back: {sorted(importers - allowed)}"
    )


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "x.py").write_text("from pkg.b import y\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (package / "c.py").write_text("import pkg.b\n")
    assert find_cycles(get_import_graph(package)) == [["pkg.a.x", "pkg.b"]]
