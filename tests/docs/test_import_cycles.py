"""The package has no import cycles.

The graph is built from the source (``ast``), not by importing: an edge ``a -> b``
for every module-level import in ``a`` of a module ``b`` of the package (also inside
``if``/``try`` at module level; ``if TYPE_CHECKING:`` blocks and imports inside
functions are not edges, since they do not run at import time). A module importing its
own parent package is not an edge either: the parent is necessarily being imported
already. With no cycle, every module imports the same way whichever is imported first.

Imports deferred into a function to dodge a cycle hide the same design knot: none may
close one (``KNOWN_DEFERRED`` is empty and stays so).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chutes_subnet"


def _module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(stmts: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for stmt in stmts:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.append(stmt)
        elif isinstance(stmt, ast.If):
            found += _runtime_imports(stmt.orelse)
            if not _is_type_checking(stmt.test):
                found += _runtime_imports(stmt.body)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                found += _runtime_imports(block)
    return found


def _all_imports(stmts: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Every import, also inside functions, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = list(stmts)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph(root: Path, *, deferred: bool = False) -> dict[str, set[str]]:
    mods = _module_names(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    collect = _all_imports if deferred else _runtime_imports
    for mod, (path, is_pkg) in mods.items():
        for node in collect(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                if node.level == 0:
                    base = node.module or ""
                else:
                    base = ".".join(here[: len(here) - node.level + 1]
                                    + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target:  # importing a.b.c imports a.b and a too
                    if target in mods and target != mod and not mod.startswith(target + "."):
                        graph[mod].add(target)
                    target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
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
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 100 and any(graph.values())
    assert cycles(graph) == []


#: Cycles closed only by imports inside functions (none; the list may only shrink).
KNOWN_DEFERRED: list[list[str]] = []


def test_no_new_cycle_hides_behind_a_deferred_import() -> None:
    found = cycles(import_graph(PACKAGE, deferred=True))
    new = [c for c in found if c not in KNOWN_DEFERRED]
    assert new == [], f"an import inside a function closes a new cycle: {new}"


def test_a_cycle_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "chutes_subnet"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")
    (pkg / "sub" / "a.py").write_text("from chutes_subnet.b import y\nx = 1\n")
    (pkg / "b.py").write_text("if True:\n    from chutes_subnet.sub import a\ny = 2\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from chutes_subnet import b\n")
    assert cycles(import_graph(pkg)) == [["chutes_subnet.b", "chutes_subnet.sub",
                                          "chutes_subnet.sub.a"]]
    (pkg / "d.py").write_text("def f():\n    from chutes_subnet import e\n")
    (pkg / "e.py").write_text("from chutes_subnet import d\n")
    deferred = cycles(import_graph(pkg, deferred=True))
    assert ["chutes_subnet.d", "chutes_subnet.e"] in deferred
    assert ["chutes_subnet.d", "chutes_subnet.e"] not in cycles(import_graph(pkg))
