"""Imports run downward only: the import graph is built from the source (no module is executed) and checked.

Floors, from the bottom: ``ops`` never imports ``zoo``; in ``zoo``, blocks / model / tasks / retrieval / lit never
import train, evaluate, sample or bench; ``zoo.train`` and everything below it never import ``zoo.bench``; only
``zoo.bench`` imports ``zoo.bench``. And no circle among the package's modules.
"""
import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its source (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for top in ("ops", "zoo") for p in (ROOT / top).rglob("*.py")]
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) - {module_name(p)} for p in paths}


GRAPH = import_graph()
UPPER = ("zoo.train", "zoo.evaluate", "zoo.sample", "zoo.bench")
LOWER = ("zoo.blocks", "zoo.model", "zoo.tasks", "zoo.retrieval", "zoo.lit", "zoo.checkpoints", "zoo.checks",
         "zoo.sparse_adam", "zoo.interrupt", "zoo.user_modules", "zoo.report", "zoo.sweeps")


def under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_ops_never_imports_zoo():
    wrong = {m: sorted(d for d in deps if under(d, ("zoo",))) for m, deps in GRAPH.items() if under(m, ("ops",))}
    assert not {m: d for m, d in wrong.items() if d}


def test_lower_floors_never_import_train_evaluate_sample_or_bench():
    wrong = {m: sorted(d for d in deps if under(d, UPPER)) for m, deps in GRAPH.items() if under(m, LOWER)}
    assert not {m: d for m, d in wrong.items() if d}


def test_only_bench_imports_bench():
    wrong = {m: sorted(d for d in deps if under(d, ("zoo.bench",))) for m, deps in GRAPH.items()
             if not under(m, ("zoo.bench",))}
    assert not {m: d for m, d in wrong.items() if d}


def test_no_import_circles():
    """Tarjan's strongly connected components; a package's __init__ importing its own submodules is not a circle
    (the submodule imports the package's siblings, not the package's namespace)."""
    edges = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m, deps in GRAPH.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_graph_is_not_empty():
    """Guards the checks above against a graph that finds nothing (they would then pass vacuously)."""
    assert "ops.selective_scan.reference" in GRAPH["zoo.blocks.mamba"] or "ops" in GRAPH["zoo.blocks.mamba"]
    assert "zoo.blocks.registry" in GRAPH["zoo.blocks.attention"]
