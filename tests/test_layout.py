"""The package's layout: stages import one way (no import circles between modules)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "newsletter"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (top level or inside functions,
    TYPE_CHECKING blocks excluded: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
    return {m for m in out if m in known}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {name: _imports(path, known) for name, path in files.items()}
    for name, deps in graph.items():  # a package's __init__ is not a dependency of its modules
        deps.discard(name)
        deps -= {d for d in deps if name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_the_edition_model_and_the_render_view_helpers_stand_alone():
    graph = import_graph()
    assert graph["newsletter.edition.model"] == set()
    assert "newsletter.edition.source" not in graph["newsletter.edition.essay"]
    assert "newsletter.render.html" not in graph["newsletter.render.text"]


DRIVERS = ("sqlite3", "psycopg", "psycopg_pool", "psycopg_binary")


def driver_imports() -> dict[str, set[str]]:
    """Files outside newsletter/store/ that import a database driver (anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            hits = {n.split(".")[0] for n in names} & set(DRIVERS)
            if hits:
                found.setdefault(str(path.relative_to(REPO)), set()).update(hits)
    return found


def test_sql_lives_in_store_nothing_else_imports_a_database_driver():
    assert driver_imports() == {}


def test_the_driver_scan_sees_an_import(tmp_path, monkeypatch):
    import test_layout

    package = tmp_path / "newsletter"
    (package / "send").mkdir(parents=True)
    (package / "store").mkdir()
    (package / "send" / "x.py").write_text("def f():\n    import sqlite3\n", encoding="utf-8")
    (package / "store" / "y.py").write_text("import psycopg\n", encoding="utf-8")
    monkeypatch.setattr(test_layout, "PACKAGE", package)
    monkeypatch.setattr(test_layout, "REPO", tmp_path)
    assert test_layout.driver_imports() == {"newsletter/send/x.py": {"sqlite3"}}
