"""Imports run one way along the data path: the layer order in the README, enforced.

Every module of every folder is read (function-level imports included); an import of a later
layer or any import cycle fails, naming the order and the offending edges.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("deploy", "pipelines", "preprocess", "models", "broker", "profiling")


def layer_order() -> list[list[str]]:
    """The README's layers, first to last; each a list of module prefixes (without ``cvserve.``)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layers -->\n(.*?)\n<!-- /layers -->", text, re.S)
    assert block, "README.md has no <!-- layers --> ... <!-- /layers --> block"
    return [cell.split() for cell in re.findall(r"`([^`]+)`", block.group(1))]


def modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts).removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The cvserve modules ``path`` imports anywhere in its body."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    stripped = {n.removeprefix("cvserve.") for n in names if n.startswith("cvserve.")}
    return {n for n in stripped if n in known}


def layer_of(module: str, order: list[list[str]]) -> int | None:
    """Index of the layer whose longest prefix matches ``module``."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(order):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer_and_imports_only_earlier_layers() -> None:
    order = layer_order()
    mods = modules()
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    placed = {m: layer_of(m, order) for m in mods if m not in packages}
    unplaced = sorted(m for m, layer in placed.items() if layer is None)
    names = " → ".join(" ".join(layer) for layer in order)
    assert not unplaced, f"modules in no layer of the README's order ({names}): {unplaced}"
    against = []
    for module, layer in sorted(placed.items()):
        for target in sorted(imports(mods[module], set(mods))):
            target_layer = placed.get(target)
            if target_layer is not None and target_layer > layer:  # type: ignore[operator]
                against.append(f"{module} -> {target}")
    assert not against, f"imports against the layer order ({names}):\n  " + "\n  ".join(against)


def test_there_are_no_import_cycles() -> None:
    mods = modules()
    graph = {m: imports(p, set(mods)) for m, p in mods.items()}
    found = cycles(graph)
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from cvserve.broker.worker import StageWorker\n")
    assert imports(source, {"broker.worker"}) == {"broker.worker"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    order = [["deploy"], ["pipelines.spec"], ["pipelines.app"]]
    assert layer_of("pipelines.app.cli", order) == 2
    assert layer_of("pipelines.catalog", order) is None


def test_broker_reads_no_catalog_only_the_spec() -> None:
    """A route is handed to the broker by the app: broker/ imports of pipelines/ are the spec's
    types, never the catalog (which parses every shipped file) nor a file reader."""
    mods = modules()
    reads = sorted(
        f"{module} -> {target}"
        for module, path in mods.items()
        if module.startswith("broker.")
        for target in imports(path, set(mods))
        if target.startswith("pipelines.") and target != "pipelines.spec"
    )
    assert not reads, "broker/ imports more of pipelines/ than its spec:\n  " + "\n  ".join(reads)
