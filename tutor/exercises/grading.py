"""Grade exercise notebooks: ``python -m tutor grade PATH... [--json FILE] [--timeout S]``.

Each notebook runs top to bottom in a fresh kernel (nbclient, a time limit per cell, errors allowed
so one broken cell does not hide the questions after it). Every ``check()`` in that kernel appends
its result to a file named by ``TUTOR_GRADE_RESULTS`` (see :mod:`tutor.exercises.progress`); the
grader reads that file, never the stored outputs, which a learner can edit. A notebook that hangs,
kills its kernel or is not a notebook at all gets a row that says so; the others are still graded.
One point per question whose last check was correct.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .progress import GRADE_ENV, PROGRESS_ENV

STATUS_WORDS = {"correct": "correct", "incorrect": "incorrect", "not_attempted": "not attempted"}


@dataclass
class QuestionGrade:
    id: str
    status: str
    points: int
    max_points: int
    message: str = ""


@dataclass
class NotebookGrade:
    path: str
    status: str                  # graded | timeout | kernel died | error | malformed | not found
    note: str = ""
    questions: List[QuestionGrade] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(q.points for q in self.questions)

    @property
    def max_points(self) -> int:
        return sum(q.max_points for q in self.questions)


def find_notebooks(paths: Sequence[str]) -> List[Path]:
    """Files as given; folders give their ``*.ipynb`` (sorted, checkpoints skipped)."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(x for x in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in x.parts)
        else:
            found.append(p)
    return found


def _expected_ids(path: Path) -> List[str]:
    from . import notebook_questions
    match = re.match(r"(\d\d)_", path.name)
    return [q.id for q in notebook_questions().get(match.group(1), [])] if match else []


def _read_records(results: Path) -> Dict[str, dict]:
    """The last record of each known question id written by the kernel."""
    from . import questions
    known = {q.id for q in questions()}
    records: Dict[str, dict] = {}
    if not results.exists():
        return records
    for line in results.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("id") in known and rec.get("status") in STATUS_WORDS:
            records[rec["id"]] = rec
    return records


def _execute(nb, path: Path, timeout: int, kernel: str, env: dict) -> tuple:
    """Run ``nb`` in a fresh kernel; returns ``(status, note)``."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    running = {"cell": 0}

    def started(cell, cell_index):
        running["cell"] = cell_index + 1

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                            shutdown_kernel="immediate", on_cell_execute=started,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute(env=env)
    except CellTimeoutError:
        return "timeout", f"cell {running['cell']} ran past the {timeout} s limit and was stopped"
    except DeadKernelError:
        return "kernel died", f"the kernel died while running cell {running['cell']}"
    except Exception as exc:  # report it and go on with the other notebooks
        return "error", f"could not run: {type(exc).__name__}: {str(exc)[:200]}"
    errors = sum(1 for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error")
    return "graded", f"{errors} cell(s) raised an error" if errors else ""


def grade_notebook(path: Path, timeout: int = 60, kernel: str = "python3") -> NotebookGrade:
    """Execute one notebook and grade the checks it ran."""
    import nbformat
    path = Path(path)
    shown = str(path)
    if path.is_absolute() and not os.path.relpath(path).startswith(".."):
        shown = os.path.relpath(path)
    expected = _expected_ids(path)
    blank = [QuestionGrade(qid, "not_attempted", 0, 1) for qid in expected]
    if not path.is_file():
        return NotebookGrade(shown, "not found", "no such file", blank)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, not a notebook, unreadable
        return NotebookGrade(shown, "malformed", f"not a readable notebook ({type(exc).__name__})", blank)
    with tempfile.TemporaryDirectory(prefix="tutor-grade-") as tmp:
        results = Path(tmp) / "results.jsonl"
        env = dict(os.environ)
        env.update({GRADE_ENV: str(results), PROGRESS_ENV: str(Path(tmp) / "progress.json"),
                    "MPLBACKEND": "Agg", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2")})
        status, note = _execute(nb, path, timeout, kernel, env)
        records = _read_records(results)
    ids = expected + sorted(set(records) - set(expected))
    grades = []
    for qid in ids:
        rec = records.get(qid, {"status": "not_attempted", "message": "never checked"})
        grades.append(QuestionGrade(qid, rec["status"], int(rec["status"] == "correct"), 1,
                                    str(rec.get("message", ""))))
    return NotebookGrade(shown, status, note, grades)


def format_table(grades: Sequence[NotebookGrade]) -> str:
    """A plain-text table: notebook x question, points, and the total."""
    width = max([len("notebook")] + [len(g.path) for g in grades])
    line = f"{{:<{width}}}  {{:<9}}  {{:<15}}  {{:>7}}"
    rows = [line.format("notebook", "question", "result", "points"), "-" * (width + 38)]
    for g in grades:
        name = g.path
        if g.status != "graded" or g.note:
            rows.append(line.format(name, "-", g.status, "") + (f"  {g.note}" if g.note else ""))
            name = ""
        for q in g.questions:
            rows.append(line.format(name, q.id, STATUS_WORDS[q.status], f"{q.points}/{q.max_points}"))
            name = ""
        rows.append(line.format("", "", "subtotal", f"{g.points}/{g.max_points}"))
    total, most = sum(g.points for g in grades), sum(g.max_points for g in grades)
    percent = 100.0 * total / most if most else 0.0
    rows += ["-" * (width + 38), line.format("TOTAL", "", f"{percent:.1f} %", f"{total}/{most}")]
    return "\n".join(rows)


def to_json(grades: Sequence[NotebookGrade]) -> dict:
    """The same content as the table, as JSON-ready data."""
    total, most = sum(g.points for g in grades), sum(g.max_points for g in grades)
    return {"notebooks": [dict(asdict(g), points=g.points, max_points=g.max_points) for g in grades],
            "points": total, "max_points": most, "percent": round(100.0 * total / most, 2) if most else 0.0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of ``python -m tutor grade``; returns 0 when it graded, 2 when nothing to grade."""
    ap = argparse.ArgumentParser(prog="python -m tutor grade", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="notebooks or folders of notebooks")
    ap.add_argument("--json", metavar="FILE", help="also write the grades as JSON to FILE")
    ap.add_argument("--timeout", type=int, default=60, help="seconds each cell may run (default 60)")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel to run the notebooks in")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at once (default 1)")
    opts = ap.parse_args(list(argv) if argv is not None else None)
    paths = find_notebooks(opts.paths)
    if not paths:
        print("nothing to grade: no .ipynb file in " + ", ".join(opts.paths), file=sys.stderr)
        return 2
    def grade(path: Path) -> NotebookGrade:
        print(f"grading {path} ...", file=sys.stderr, flush=True)
        return grade_notebook(path, opts.timeout, opts.kernel)
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        grades = list(pool.map(grade, paths))            # each notebook has its own kernel
    print(format_table(grades))
    if opts.json:
        Path(opts.json).write_text(json.dumps(to_json(grades), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
