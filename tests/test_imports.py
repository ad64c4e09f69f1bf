"""The package's layers: no import cycle between its folders, and the lower layers never import
the training loop. Every import counts, also those inside functions (a lazy import is still a
dependency); registry entries ("module:attr" strings) are not imports.

Run it as a script to print the folder graph: ``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "shiftray"
LOWER = ("methods", "models", "data", "evaluate", "config", "finetune", "registry")


def unit(module: str) -> str:
    """shiftray.train.loop -> train; shiftray.registry -> registry."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shiftray"


def imports(path: Path) -> set[str]:
    here = "shiftray." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")[: -node.level]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "shiftray" or m.startswith("shiftray.")}


def folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = unit("shiftray." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        deps = {unit(m) for m in imports(path)} - {src, "shiftray"}
        graph.setdefault(src, set()).update(deps)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one folder (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_folders():
    assert cycles(folder_graph()) == []


def test_lower_layers_never_import_the_training_loop():
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {m}"
        for path in PACKAGE.rglob("*.py")
        if unit("shiftray." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)) in LOWER
        for m in imports(path)
        if unit(m) == "train"
    ]
    assert offenders == []


def test_the_loop_and_each_of_its_steps_are_short():
    """train_loop_per_worker reads as a recipe: it and every step it calls fit on a screen."""
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in (PACKAGE / "train").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    g = folder_graph()
    for src in sorted(g):
        print(f"{src:10s} -> {', '.join(sorted(g[src])) or '-'}")
    found = cycles(g)
    print("cycles:", found or "none")
    sys.exit(1 if found else 0)


def _name_tests(path: Path, names: set[str]) -> list[str]:
    """Places that test a value against a plugin's name: ``x == "shot"``, ``x in ("a", "b")``,
    ``x.startswith("hf/")``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        consts = []
        if isinstance(node, ast.Compare):
            for c in node.comparators:
                consts += [c] if isinstance(c, ast.Constant) else getattr(c, "elts", [])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "removeprefix")):  # fmt: skip
            for a in node.args:
                consts += [a] if isinstance(a, ast.Constant) else getattr(a, "elts", [])
        found += [f"{path.relative_to(PACKAGE)}:{node.lineno} {c.value!r}" for c in consts
                  if isinstance(c, ast.Constant) and c.value in names]  # fmt: skip
    return found


def test_the_spec_and_the_data_layer_ask_traits_never_a_plugin_s_name():
    """config/ and data/ (and search/) decide by what a plugin declares (streamable,
    accepts_lora, mixes_inputs, a backbone family's reads), never by testing its name; the
    backbone families (timm/, hf/, clip/) are resolved in one place, shiftray.registry."""
    from shiftray.registry import FAMILIES, REGISTRIES

    names = {n for r in REGISTRIES for n in r.names()} | {f.prefix for f in FAMILIES}
    paths = [p for folder in ("config", "data", "search", "models", "serving", "train")
             for p in sorted((PACKAGE / folder).rglob("*.py"))]  # fmt: skip
    assert [hit for p in paths for hit in _name_tests(p, names)] == []
