"""The package's imports only go down the layers (design.md §1), and no modules import each other in a cycle.

The allowed edges live here, in one table. A module may import its own layer and the layers its layer lists;
every layer may import the ground floor. The test reads the source with ``ast`` (imports inside functions
count too: a lazy import is still a dependency), so it needs nothing installed beyond the stdlib.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "t2po_cli"

GROUND = "ground"
"""The ground floor: the modules at the package root (errors, console, paths, run_folder, checks) and the
metric keys (``tracking/keys.py``). Everything may import it; it imports only itself."""

LAYERS: dict[str, frozenset[str]] = {
    "cli": frozenset({"jobs", "report", "trainer", "tracking", "config", "rollout", "hooks", "algo", "envs", "diag"}),
    "jobs": frozenset({"trainer", "tracking", "config"}),
    "report": frozenset({"tracking", "config"}),
    "trainer": frozenset({"diag", "tracking", "config", "rollout", "hooks", "algo", "envs"}),
    "tracking": frozenset({"config"}),
    "config": frozenset({"hooks", "algo", "envs"}),  # the registries and settings dataclasses (torch-free)
    "rollout": frozenset({"hooks", "envs"}),
    "hooks": frozenset(),
    "algo": frozenset(),
    "diag": frozenset(),  # early-warning signals: pure torch functions, like algo/
    "envs": frozenset(),
    GROUND: frozenset(),
}
"""Layer → the layers it may import (besides itself and the ground floor)."""
ENTRY_POINTS = {"t2po_cli.__main__"}
"""Modules above every layer (``python -m t2po_cli``)."""


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module == "t2po_cli.tracking.keys" or (len(parts) <= 2 and module not in ENTRY_POINTS):
        return GROUND  # t2po_cli, t2po_cli.errors, t2po_cli.console, ...
    return parts[1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (annotations only, never run)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def imports_of(path: Path, module: str, *, runtime_only: bool = False) -> set[str]:
    """Every ``t2po_cli`` module ``path`` imports, at module level or inside functions. ``runtime_only``
    leaves out imports under ``if TYPE_CHECKING:`` (they cannot form an import cycle)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree) if runtime_only else set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("t2po_cli"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            if base.startswith("t2po_cli"):
                for alias in node.names:  # `from t2po_cli.tracking import keys` imports the module keys
                    sub = f"{base}.{alias.name}"
                    found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() else base)
    return found


def import_graph(root: Path = PACKAGE, *, runtime_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, module_name(p, root), runtime_only=runtime_only)
            for p in sorted(root.rglob("*.py"))}


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        if src in ENTRY_POINTS:
            continue
        a = layer_of(src)
        for dst in sorted(targets):
            b = layer_of(dst)
            if b != a and b != GROUND and b not in LAYERS[a]:
                bad.append(f"{src} ({a}) imports {dst} ({b})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_every_layer_is_in_the_table() -> None:
    layers = {layer_of(m) for m in import_graph() if m not in ENTRY_POINTS}
    assert layers <= set(LAYERS), f"add these folders to LAYERS: {sorted(layers - set(LAYERS))}"


def test_no_module_imports_from_a_layer_above_it() -> None:
    assert back_edges(import_graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(runtime_only=True)) == []


def test_the_check_catches_a_back_edge_and_a_cycle(tmp_path: Path) -> None:
    # A copy of the package with one added back-edge (the trainer's warm start used to be reached from
    # cli through a private helper; here envs imports the trainer) and one cycle.
    import shutil

    root = tmp_path / "t2po_cli"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "envs" / "base.py"
    target.write_text(target.read_text() + "\n\ndef _bad():\n    from t2po_cli.trainer.loop import train_run\n")
    assert back_edges(import_graph(root)) == ["t2po_cli.envs.base (envs) imports t2po_cli.trainer.loop (trainer)"]
    assert any("t2po_cli.envs.base" in c and "t2po_cli.trainer.loop" in c
               for c in cycles(import_graph(root, runtime_only=True)))


@pytest.mark.parametrize("module", ["t2po_cli.errors", "t2po_cli.console", "t2po_cli.paths", "t2po_cli.run_folder",
                                    "t2po_cli.checks", "t2po_cli.tracking.keys"])
def test_ground_floor_imports_only_ground(module: str) -> None:
    graph = import_graph()
    assert all(layer_of(m) == GROUND for m in graph[module]), graph[module]
