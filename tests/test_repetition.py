"""Repeated code in ``tutor/`` stays where docs/architecture.md says it is left on purpose.

A small detector in the spirit of the ``duplicates`` command (which CI may not have): every
``tutor/**/*.py`` file becomes a list of lines, each with its text (comment dropped, white space
folded) and its *shape* (identifiers -> ``ID``, numbers -> ``N``, strings -> ``S``; keywords and
punctuation kept). A line that is only prose (strings, perhaps after ``name =``) keeps its text as
its shape: prose repeats only to the letter. Blank lines, comments, docstrings, lone punctuation and
import lines are passed over; a ``def`` header or a bare annotated field breaks a run. Two places repeat each other when six or more consecutive lines have the same shape, except:

* a run of six lines that stands in more than eight places is a pattern of the house, not a copy;
* a run made only of house shapes (each in eight files or more: ``ID = ID``, ``S ,``, a question
  class's ``_congrats = S``) is boilerplate;
* within one file the two places may not overlap (the rows of one table, shifted by a row).

A repeat is named by the innermost function or class around its first line on each side
(``exercises/nb02.py:AllowedKeys``; ``<module>`` at module level), so names survive edits that
move lines. The section "Repeated code left on purpose" at the end of docs/architecture.md lists
the pairs allowed, one table row each with its reason. The test fails on a repeat the table does
not list (naming both places, their lines and the first shared line), on a row whose repeat is
gone, and on more than ``BUDGET`` rows.
"""
from __future__ import annotations

import ast
import io
import itertools
import keyword
import re
import tokenize
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tutor"
DOC = ROOT / "docs" / "architecture.md"
SECTION = "## Repeated code left on purpose"

_PROSE = {"S", ",", "(", ")", "+"}   # tokens of a line that is only prose: strings and their commas
_UNIQUE = itertools.count()   # each declaration line gets a shape no other line has
MIN_LINES = 6       # consecutive lines of one shape that make a repeat
MOST_PLACES = 8     # a run standing in more places than this is a house pattern, not a copy
HOUSE_FILES = 8     # a line shape found in this many files is a house shape (``ID = ID``, ``S ,``)
BUDGET = 6          # rows the table may hold for the whole of tutor/

_STRING = re.compile(r"""[rRbBuUfF]{0,2}("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\"\"\"|''')""")
_NUMBER = re.compile(r"(?<![\w.])(?:\d[\d_]*\.?\d*(?:[eE][+-]?\d+)?|\.\d+)j?")
_NAME = re.compile(r"[A-Za-z_]\w*")
_IMPORT = re.compile(r"^(?:from\s+[\w.]+\s+)?import\s")
_KEEP = (set(keyword.kwlist) - {"True", "False", "None"}) | {"S", "N"}    # names kept in a shape


@dataclass(frozen=True)
class Line:
    """One kept line: where it stands, its folded text and its shape."""
    number: int
    text: str
    shape: str


@dataclass(frozen=True)
class Repeat:
    """A run of ``length`` same-shape lines at two places (file, first and last line number)."""
    a: Tuple[str, int, int]
    b: Tuple[str, int, int]
    length: int
    first: str              # the first shared line, as the ``a`` side writes it

    def key(self, scopes: Dict[str, Dict[int, str]]) -> FrozenSet[str]:
        """``{"file.py:Scope", "other.py:Scope"}``: the pair as the table names it."""
        return frozenset(f"{f}:{scopes[f].get(start, '<module>')}" for f, start, _ in (self.a, self.b))


def shape_of(text: str) -> str:
    """``ID(N, S)`` for ``Notebook(0, "x")``: strings, numbers and identifiers folded, keywords kept."""
    text = _STRING.sub(" S ", text)
    text = _NUMBER.sub(" N ", text)
    text = _NAME.sub(lambda m: m[0] if m[0] in _KEEP else "ID", text)
    return " ".join(text.split())


def code_lines(source: str) -> List[Line]:
    """The lines of a Python file that count: no blank, comment, docstring, lone-punctuation or import
    line; a declaration (a ``def`` header's lines, a bare annotated field ``name: type``) counts as a
    line that matches no other, so a run never goes through it."""
    comments: Dict[int, int] = {}                       # line -> column where its comment starts
    skipped: Set[int] = set()                           # import statements and lone strings (docstrings)
    declared = declaration_lines(source)                # kept as run breakers: they never match
    statement: List[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
        elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if statement and (statement[0].string in ("import", "from")
                              or all(t.type == tokenize.STRING for t in statement)):
                skipped.update(range(statement[0].start[0], tok.start[0] + 1))
            statement = []
        elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            statement.append(tok)
    kept = []
    for number, raw in enumerate(source.splitlines(), 1):
        text = " ".join(raw[:comments.get(number, len(raw))].split())
        if number in skipped or not re.search(r"\w", text) or _IMPORT.match(text):
            continue
        shape = f"<declaration {next(_UNIQUE)}>" if number in declared else shape_of(text)
        if set(re.sub(r"^ID = ", "", shape).split()) <= _PROSE:
            shape = "prose: " + text                     # prose (hints, table text) repeats only to the letter
        kept.append(Line(number, text, shape))
    return kept


def declaration_lines(source: str) -> Set[int]:
    """Lines that declare rather than do: a function's header (``def`` up to its body; parameter lists
    of kernels that take the same tensors are alike by necessity) and bare annotated fields of a
    dataclass (``n_blocks: int``)."""
    lines: Set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.lineno, node.body[0].lineno))
        elif isinstance(node, ast.AnnAssign) and node.value is None:
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def scopes_of(source: str) -> Dict[int, str]:
    """``{line: "Class.method"}``: the innermost def or class around each line (module level: absent)."""
    scopes: Dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                for n in range(child.lineno, child.end_lineno + 1):
                    scopes[n] = name
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return scopes


def find_repeats(files: Dict[str, List[Line]]) -> List[Repeat]:
    """Every maximal run of >= MIN_LINES same-shape lines shared by two places (of one file or two).

    A run made only of house shapes (each found in ``HOUSE_FILES`` files or more: the attribute lines
    of the question classes, dataclass fields, lone strings) is boilerplate and not listed.
    """
    spread = Counter(shape for lines in files.values() for shape in {line.shape for line in lines})
    seeds: Dict[Tuple[str, ...], List[Tuple[str, int]]] = defaultdict(list)
    for name, lines in files.items():
        for i in range(len(lines) - MIN_LINES + 1):
            seeds[tuple(line.shape for line in lines[i:i + MIN_LINES])].append((name, i))
    found: Dict[Tuple, Repeat] = {}
    for places in seeds.values():
        if not 2 <= len(places) <= MOST_PLACES:
            continue
        for n, (fa, ia) in enumerate(places):
            for fb, ib in places[n + 1:]:
                la, lb = files[fa], files[fb]
                while ia > 0 and ib > 0 and la[ia - 1].shape == lb[ib - 1].shape and (fa, ia - 1) != (fb, ib):
                    ia, ib = ia - 1, ib - 1                  # back to the start of the run
                if (fa, ia, fb, ib) in found:
                    continue
                length = MIN_LINES
                while (ia + length < len(la) and ib + length < len(lb)
                       and la[ia + length].shape == lb[ib + length].shape):
                    length += 1
                if fa == fb:
                    length = min(length, ib - ia)                # rows of one table: the places may not overlap
                if length < MIN_LINES or all(spread[line.shape] >= HOUSE_FILES for line in la[ia:ia + length]):
                    found[(fa, ia, fb, ib)] = None               # seen, not listed
                    continue
                found[(fa, ia, fb, ib)] = Repeat((fa, la[ia].number, la[ia + length - 1].number),
                                                 (fb, lb[ib].number, lb[ib + length - 1].number),
                                                 length, la[ia].text)
    return sorted(filter(None, found.values()), key=lambda r: (-r.length, r.a, r.b))


def package_repeats() -> Tuple[List[Repeat], Dict[str, Dict[int, str]]]:
    """The repeats of ``tutor/`` and the scope table of each file, by path relative to ``tutor/``."""
    files, scopes = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        source = path.read_text(encoding="utf-8")
        files[name], scopes[name] = code_lines(source), scopes_of(source)
    return find_repeats(files), scopes


def allowed_pairs(text: str) -> Dict[FrozenSet[str], str]:
    """``{pair: reason}`` from the tables of the section "Repeated code left on purpose"."""
    assert SECTION in text, f"{DOC.name} has no section {SECTION!r} (it must be its last section)"
    section = text.split(SECTION, 1)[1]
    assert "\n## " not in section, f"{SECTION!r} must be the last section of {DOC.name}"
    allowed: Dict[FrozenSet[str], str] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if not row.lstrip().startswith("|") or len(cells) != 2 or "~" not in cells[0]:
            continue                                            # prose, header or separator row
        pair = frozenset(p.strip().strip("`") for p in cells[0].split("~"))
        assert pair not in allowed, f"{cells[0]} is listed twice in {DOC.name}"
        assert cells[1], f"{cells[0]} needs its reason in {DOC.name}"
        allowed[pair] = cells[1]
    return allowed


def test_repeated_code_is_only_where_the_architecture_doc_allows_it():
    repeats, scopes = package_repeats()
    allowed = allowed_pairs(DOC.read_text(encoding="utf-8"))
    seen: Dict[FrozenSet[str], Repeat] = {}
    for r in repeats:
        seen.setdefault(r.key(scopes), r)
    new = [f"  tutor/{r.a[0]}:{r.a[1]}-{r.a[2]} ~ tutor/{r.b[0]}:{r.b[1]}-{r.b[2]} "
           f"({r.length} lines of one shape, from {r.first!r}); table row: "
           f"`{' ~ '.join(sorted(key))}`" for key, r in seen.items() if key not in allowed]
    gone = [" ~ ".join(sorted(key)) for key in allowed if key not in seen]
    if new:
        pytest.fail("new repeated code in tutor/ (share one helper, or list the pair with its reason under "
                    f"{SECTION!r} in docs/architecture.md):\n" + "\n".join(new), pytrace=False)
    if gone:
        pytest.fail(f"rows of {SECTION!r} in docs/architecture.md whose repeat is gone (delete them):\n  "
                    + "\n  ".join(gone), pytrace=False)
    kept = [" ~ ".join(sorted(key)) for key in allowed]
    assert len(kept) <= BUDGET, f"{len(kept)} pairs left on purpose, the budget is {BUDGET}: {kept}"


def test_the_detector_finds_a_renamed_copy_and_ignores_imports_and_comments():
    body = ("def f(a, b):\n    x = a + 1  # note\n    y = b * 2\n    if x > y:\n        return x\n"
            "    z = [x, y]\n    return sum(z)\n")
    renamed = body.replace("f(a, b)", "g(p, q)").replace("a + 1", "p + 7").replace("b * 2", "q * 3")
    padding = "import os\nfrom typing import (\n    List,\n)\n# a comment\n\n"
    files = {"one.py": code_lines(padding + body), "two.py": code_lines(renamed)}
    (r,) = find_repeats(files)
    # the def lines are declarations: they break runs, so the copy is the body
    assert (r.a, r.b, r.length, r.first) == (("one.py", 8, 13), ("two.py", 2, 7), 6, "x = a + 1")
    assert shape_of('x = f("a", 2.5)  ') == "ID = ID( S , N )"
    assert find_repeats({"one.py": code_lines(body), "two.py": code_lines("def f(a):\n    return a\n")}) == []


def test_the_detector_passes_over_docstrings_and_the_rows_of_one_table():
    assert [line.text for line in code_lines('def f():\n    """Doc\n    string."""\n    return 1\n')] == [
        "def f():", "return 1"]
    def table(rows: int) -> Dict[str, List[Line]]:
        return {"table.py": code_lines("ROWS = (\n" + "".join(f"    ({n}, 'row {n}', f{n}),\n" for n in range(rows))
                                       + ")\n")}
    assert find_repeats(table(9)) == []                                 # 9 rows: overlapping places only
    (r,) = find_repeats(table(12))
    assert (r.a[1:], r.b[1:], r.length) == ((2, 7), (8, 13), 6)         # 12 rows: two halves of six
