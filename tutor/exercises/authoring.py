"""Write the exercise and solution notebooks from the question data (one source of truth).

    python -m tutor.exercises.authoring            # rewrites exercises/*.ipynb and solutions/*.ipynb

Both notebooks of a pair have the same cells: a title, a set-up cell, then per question a prompt,
a code cell (the placeholder in exercises/, the solution in solutions/), a check cell and a cell of
commented-out hints. Exercise notebooks end with the learner's progress; solution notebooks turn
progress saving off in their set-up cell (the answer key is not anyone's progress). Cell ids are
fixed so a rewrite only changes what really changed. Outputs of the solution notebooks are then
stored with ``python scripts/run_notebooks.py solutions``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import List

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .registry import MODULES

SETUP = """import torch
import tutor
import tutor.notebook
from tutor import exercises
from tutor.exercises import ____

device = tutor.notebook.setup()"""

HOW_TO = """Each question has a cell for your code and a cell that checks it; run them in order. The check
calls your function on fresh inputs (edges, global tokens, padding, tiny and huge windows) and
tells you which input went wrong. Stuck? `q1.hint()`, then `q1.hint(2)`; `q1.solution()` shows one
answer. `tutor.progress()` shows what you have solved so far."""


def _cell(kind: str, source: str, cell_id: str, tags=()):
    cell = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
    cell["id"] = cell_id
    if tags:
        cell["metadata"]["tags"] = list(tags)
    return cell


def build_notebook(module_name: str, solved: bool) -> nbformat.NotebookNode:
    """The exercise (``solved=False``) or solution notebook of one question module."""
    module = importlib.import_module(f"{__package__}.{module_name}")
    title = module.TITLE + (" (solutions)" if solved else "")
    cells: List = [
        _cell("markdown", f"# {title}\n\n{module.INTRO}\n\nCompanion of the course notebook "
                          f"[`{module.NOTEBOOK}`](../notebooks/{module.NOTEBOOK}.ipynb).\n\n{HOW_TO}", "intro"),
        _cell("code", SETUP + ("\nexercises.keep_progress(False)  # the answer key is not your progress"
                               if solved else ""), "setup"),
    ]
    for k, q in enumerate(module.QUESTIONS, start=1):
        var = f"q{k}"
        cells += [
            _cell("markdown", f"## Question {k} · {q.title}\n\n{q.prompt}", f"{var}-prompt"),
            _cell("code", (q.solution_code if solved else q.stub).strip(), f"{var}-answer"),
            _cell("code", f'{var} = exercises.question("{q.id}")\n{var}.check({q.answer_name})', f"{var}-check"),
            _cell("code", f"# {var}.hint()\n# {var}.hint(2)\n# {var}.solution()", f"{var}-hints"),
        ]
    if not solved:
        cells += [_cell("markdown", "## Your progress", "progress-title"),
                  _cell("code", "tutor.progress()", "progress", tags=("nbval-ignore-output",))]
    nb = new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    return nb


def write_all(root: Path) -> List[Path]:
    """Write every exercise and solution notebook under ``root``; returns the paths written."""
    written = []
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        for folder, solved in (("exercises", False), ("solutions", True)):
            path = root / folder / f"{module.NOTEBOOK}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(build_notebook(name, solved), path)
            written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                    help="repository root (default: the one this package lives in)")
    opts = ap.parse_args(argv)
    for path in write_all(Path(opts.root)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
