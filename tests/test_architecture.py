"""docs/architecture.md stays true: every import of ``tutor`` goes down (or across) a floor, never up,
and no modules import each other in a circle.

The floor table is read from docs/architecture.md itself, so the picture and the check cannot
disagree. Imports are parsed with ``ast`` (no module is imported), including imports inside
functions: a lazy import is still a dependency, and the usual way a circle hides.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "tutor"

#: circles that exist today, each with the reason it is tolerated and how to remove it. An entry
#: that no longer matches a circle fails the test, so the list only ever shrinks.
KNOWN_CIRCLES: Dict[frozenset, str] = {}


def read_floors(text: str) -> Dict[str, Tuple[int, str]]:
    """``{module prefix: (floor number, floor name)}`` from the markdown table after ``<!-- floors``."""
    after = text.split("<!-- floors", 1)[1]
    floors = {}
    for line in after.splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.strip().startswith("|"):
            if floors:
                break
            continue
        if len(cells) != 3 or not cells[0].isdigit():
            continue                                                    # header or separator row
        for module in re.findall(r"`([\w.]+)`", cells[2]):
            assert module not in floors, f"{module} is listed twice in {DOC.name}"
            floors[module] = (int(cells[0]), cells[1])
    return floors


def module_files(package: Path = PACKAGE) -> Dict[str, Tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` for every .py file of ``tutor``."""
    found = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return found


def imports_of(name: str, file: Path, is_pkg: bool, modules) -> Set[str]:
    """The ``tutor`` modules ``name`` imports, anywhere in the file (``from .x import y`` -> ``x.y`` if a module)."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name == "tutor" or a.name.startswith("tutor.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "tutor" or target.startswith("tutor.")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else target)
    out.discard(name)
    return out


def floor_of(module: str, floors) -> Tuple[str, Tuple[int, str]]:
    """The row a module belongs to: its longest listed prefix (``tutor`` itself matches only exactly)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in floors and (prefix != "tutor" or module == "tutor"):
            return prefix, floors[prefix]
    raise KeyError(module)


def circles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


FLOORS = read_floors(DOC.read_text(encoding="utf-8"))
MODULES = module_files()
GRAPH = {name: imports_of(name, f, is_pkg, MODULES) for name, (f, is_pkg) in MODULES.items()}


def test_the_floor_table_parses():
    assert len({floor for floor, _ in FLOORS.values()}) >= 4
    assert {"tutor.masks", "tutor.costs", "tutor.attention", "tutor.viz", "tutor.bench", "tutor"} <= set(FLOORS)


def test_every_module_has_a_floor():
    unknown = []
    for name in MODULES:
        try:
            floor_of(name, FLOORS)
        except KeyError:
            unknown.append(name)
    assert not unknown, (f"{unknown}: no floor. Add the module (or its package) to the floor table of "
                         f"docs/architecture.md, on the lowest floor whose names it imports.")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_goes_up_a_floor(name):
    _, (mine, my_floor) = floor_of(name, FLOORS)
    up = []
    for target in sorted(GRAPH[name]):
        row, (theirs, their_floor) = floor_of(target, FLOORS)
        if theirs > mine:
            up.append(f"{target} (floor {theirs}, {their_floor})")
    assert not up, (f"{name} (floor {mine}, {my_floor}) imports from a higher floor: {', '.join(up)}. "
                    f"Move the name it needs down, or the module up (docs/architecture.md).")


def test_no_circles_among_modules():
    found = [frozenset(c) for c in circles(GRAPH)]
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"modules importing each other in a circle: {new}"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"these circles are gone: remove them from KNOWN_CIRCLES in {Path(__file__).name}: {gone}"


def test_masks_and_costs_import_nothing_of_ours_but_the_validators():
    assert GRAPH["tutor.arguments"] == set()
    assert GRAPH["tutor.masks"] == {"tutor.arguments"} and GRAPH["tutor.costs"] == {"tutor.arguments"}
    assert GRAPH["tutor.patterns"] == {"tutor.masks", "tutor.arguments"}


# --------------------------------------------------------------------------- the checker checks
def test_the_checker_sees_lazy_relative_and_absolute_imports(tmp_path):
    pkg = tmp_path / "tutor"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import high\n")           # lazy, relative
    (pkg / "sub" / "__init__.py").write_text("from . import high\n")
    (pkg / "sub" / "high.py").write_text("import tutor.low\nfrom tutor import sub\n")
    mods = module_files(pkg)
    graph = {n: imports_of(n, f, p, mods) for n, (f, p) in mods.items()}
    assert graph["tutor.low"] == {"tutor.sub.high"}
    assert graph["tutor.sub"] == {"tutor.sub.high"}
    assert graph["tutor.sub.high"] == {"tutor.low", "tutor.sub"}
    assert {frozenset(c) for c in circles(graph)} == {frozenset({"tutor.low", "tutor.sub.high", "tutor.sub"})}
    floors = read_floors("<!-- floors -->\n| floor | name | modules |\n|---|---|---|\n"
                         "| 1 | low | `tutor.low` |\n| 2 | high | `tutor.sub`, `tutor` |\n\nafter\n")
    assert floor_of("tutor.sub.high", floors) == ("tutor.sub", (2, "high"))
    assert floor_of("tutor", floors) == ("tutor", (2, "high"))
    with pytest.raises(KeyError):
        floor_of("tutor.new_thing", floors)                                       # `tutor` is no catch-all
