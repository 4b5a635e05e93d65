"""The package's house rules, read from its source: no import circles, imports at the top, no import side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "bundle"
#: Modules on the ground floor: they import nothing of the bundle but each other's errors.
GROUND = {"bundle.errors", "bundle.arrays", "bundle.mri", "bundle.files", "bundle.process"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The bundle modules an import statement loads (a ``from package import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level:
        base = module.split(".")
        if MODULES[module].name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    found = [f"{name}.{a.name}" if f"{name}.{a.name}" in MODULES else name for a in node.names]
    return [t for t in found if t in MODULES]


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Every import edge between bundle modules (module and function level), and the function-level ones."""
    edges: dict[str, set[str]] = defaultdict(set)
    inner = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[module].update(t for t in _targets(module, node) if t != module)
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        inner.extend((module, t, node.lineno) for t in _targets(module, node))
    return edges, inner


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_package():
    edges, _ = _imports()
    assert sum(len(v) for v in edges.values()) > 50  # the graph was really read
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"bundle.a": {"bundle.b"}, "bundle.b": {"bundle.a"}}) == []  # not modules of the package
    edges = {m: set() for m in MODULES}
    edges["bundle.errors"] = {"bundle.mri"}
    edges["bundle.mri"] = {"bundle.errors"}
    assert _cycles(edges) == [["bundle.errors", "bundle.mri"]]


def test_imports_of_the_bundle_sit_at_the_top_of_each_file():
    _, inner = _imports()
    assert inner == []


def test_the_ground_floor_imports_only_the_ground_floor():
    edges, _ = _imports()
    for module in GROUND:
        assert edges.get(module, set()) <= GROUND, (module, edges.get(module))


def test_importing_the_package_has_no_side_effects():
    code = "import sys, bundle; assert sys.excepthook is sys.__excepthook__; bundle.data; bundle.workflows"
    subprocess.run([sys.executable, "-c", code + "; assert sys.excepthook is sys.__excepthook__"], check=True, cwd=REPO)
