"""The modules of `ingest/` (its subpackages too) import each other without a cycle, counting every
import: top-level, inside functions, and under `TYPE_CHECKING`."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[2] / "ingest"


def module_name(path: Path) -> str:
    parts = ["ingest", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """module -> the `ingest` modules it imports (a `from ingest.x import y` names `ingest.x.y` when
    that is a module, else `ingest.x`)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a module importing its own package's __init__ (or itself) is no edge between modules
                if not target or target == "ingest":
                    continue
                # a module importing its own package's __init__ (or itself) is no edge between modules
                if target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_the_walk_sees_the_imports_it_must() -> None:
    graph = import_graph()
    # top-level, function-level and TYPE_CHECKING imports are all edges
    assert graph.has_edge("ingest.pipeline", "ingest.executors")  # top level
    assert graph.has_edge("ingest.executors", "ingest.ray_executor")  # inside make_executor
    assert graph.has_edge("ingest.ray_executor", "ingest.spec")  # under TYPE_CHECKING
    assert graph.has_edge("ingest.upkeep", "ingest.pipeline")  # under TYPE_CHECKING
    assert graph.has_edge("ingest.stages.graph", "ingest.protocols")


def test_ingest_has_no_import_cycle() -> None:
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles in ingest/: {cycles}"


def test_a_cycle_is_found_when_there_is_one(tmp_path: Path, monkeypatch) -> None:
    """The check itself: two modules that import each other, one under TYPE_CHECKING, are a cycle."""
    fake = tmp_path / "ingest"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("from ingest.b import thing\n")
    (fake / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ingest.a import x\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    assert sorted(map(sorted, nx.simple_cycles(import_graph()))) == [["ingest.a", "ingest.b"]]
