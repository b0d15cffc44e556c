"""The package's layering, checked from its own imports (docs/architecture.md states the rule).

Every module belongs to a layer; a module may import only from its own layer or below, and no two
modules may import each other (directly or through a longer cycle). Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dreampropeller"

#: Layers from the bottom; the first matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("dreampropeller.version",),
    ("dreampropeller.picard",),
    ("dreampropeller.optim",),
    ("dreampropeller.scene",),
    ("dreampropeller.guidance",),
    ("dreampropeller.config",),
    ("dreampropeller.systems",),
    ("dreampropeller.export", "dreampropeller.evaluation"),
    ("dreampropeller.report",),
    ("dreampropeller.runs",),
    ("dreampropeller.bench",),
    ("dreampropeller.commands", "dreampropeller.cli", "dreampropeller.__main__"),
    ("dreampropeller",),  # the package root: the public API
]
#: Packages in one layer that must not import each other.
SIBLINGS = [("dreampropeller.export", "dreampropeller.evaluation")]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(_within(module, p) for p in prefixes) and not (
            prefixes == ("dreampropeller",) and module != "dreampropeller"
        ):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
    return {m for m in found if _within(m, "dreampropeller") and m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) - {name} for name, path in mods.items()}


def test_no_import_runs_up_a_layer():
    wrong = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, deps in graph().items()
        for b in deps
        if layer_of(b) > layer_of(a)
    ]
    assert wrong == []


def test_siblings_in_a_layer_do_not_import_each_other():
    wrong = [
        f"{a} imports {b}"
        for a, deps in graph().items()
        for b in deps
        for x, y in SIBLINGS
        if (_within(a, x) and _within(b, y)) or (_within(a, y) and _within(b, x))
    ]
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_relative_and_function_level_imports():
    g = graph()
    assert "dreampropeller.picard.process" in g["dreampropeller.scene.densify"]  # from ..picard.process
    assert "dreampropeller.picard.executors.distributed" in g["dreampropeller.picard.executors"]  # in a def
