"""``python -m tutor grade``: full marks on solutions/, nothing on untouched exercises/, and a notebook
that hangs, kills its kernel, is not JSON, is missing or has tampered outputs is reported and never stops the others.
These tests run real kernels (about a dozen notebooks, two at a time)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from tutor import exercises, grading

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(tmp_path / "progress.json"))
    monkeypatch.delenv("TUTOR_GRADE_RESULTS", raising=False)


def _notebook(path: Path, *sources: str, outputs=None) -> Path:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for index, output in (outputs or {}).items():
        nb.cells[index].outputs = [output]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_solutions_full_marks_exercises_nothing(tmp_path, capsys):
    out = tmp_path / "grades.json"
    code = grading.main([str(ROOT / "solutions"), str(ROOT / "exercises"), "--jobs", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    n = len(list(exercises.questions()))
    assert (report["points"], report["max_points"]) == (n, 2 * n)
    for nb in report["notebooks"]:
        assert nb["status"] == "graded" and nb["note"] == "", nb
        statuses = {q["status"] for q in nb["questions"]}
        number = Path(nb["path"]).name[:2]
        assert [q["id"] for q in nb["questions"]] == [q.id for q in exercises.notebook_questions()[number]]
        if "solutions" in nb["path"]:
            assert statuses == {"correct"} and nb["points"] == nb["max_points"]
        else:
            assert statuses == {"not_attempted"} and nb["points"] == 0
    table = capsys.readouterr().out
    assert "not attempted" in table and f"{n}/{2 * n}" in table and "50.0 %" in table


@pytest.mark.slow
def test_hanging_crashing_malformed_missing_and_tampered_notebooks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUTOR_CHECK_TIME_LIMIT", "1")          # read by the kernels' checker
    hang = _notebook(tmp_path / "02_hang.ipynb", "x = 1", "while True:\n    pass", "print('never')")
    crash = _notebook(tmp_path / "03_crash.ipynb", "x = 1", "import os\nos._exit(1)", "print('never')")
    broken = tmp_path / "04_broken.ipynb"
    broken.write_text("{ this is not json")
    claimed = new_output("display_data", data={"text/plain": "00.q3 Correct: 768 is right."})
    tampered = _notebook(
        tmp_path / "00_tampered.ipynb",
        "import torch\nfrom tutor import exercises",
        "def local_mask(T, window):\n    i = torch.arange(T)\n    return (i[:, None] - i[None]).abs() <= window",
        'exercises.question("00.q1").check(local_mask)',
        'def spin(T, window):\n    while True:\n        pass\nexercises.question("00.q2").check(spin)',
        "1 / 0",
        'exercises.question("00.q3").check(700)',
        outputs={5: claimed})                                   # a stored output claiming success
    after = _notebook(tmp_path / "05_after.ipynb", "print('still graded')")
    out, out2 = tmp_path / "grades.json", tmp_path / "grades2.json"
    # a short cell limit for the broken ones, then the tampered one with the default
    code = grading.main([str(hang), str(crash), str(broken), str(tmp_path / "06_missing.ipynb"), str(after),
                         "--timeout", "3", "--jobs", "2", "--json", str(out)])
    code2 = grading.main([str(tampered), "--json", str(out2)])
    assert code == code2 == 0
    rows = {Path(n["path"]).name: n for f in (out, out2) for n in json.loads(f.read_text())["notebooks"]}
    assert rows["02_hang.ipynb"]["status"] == "timeout" and "cell 2" in rows["02_hang.ipynb"]["note"]
    assert rows["03_crash.ipynb"]["status"] == "kernel died" and "cell 2" in rows["03_crash.ipynb"]["note"]
    assert rows["04_broken.ipynb"]["status"] == "malformed"
    assert rows["06_missing.ipynb"]["status"] == "not found"
    after = rows["05_after.ipynb"]
    assert after["status"] == "graded" and {q["status"] for q in after["questions"]} == {"not_attempted"}
    t = rows["00_tampered.ipynb"]
    assert t["status"] == "graded" and "1 cell(s) raised an error" in t["note"]
    got = {q["id"]: q for q in t["questions"]}
    assert got["00.q1"]["status"] == "correct"
    assert got["00.q2"]["status"] == "incorrect" and "did not finish within 1 s" in got["00.q2"]["message"]
    assert got["00.q3"]["status"] == "incorrect"               # the stored "Correct" is ignored
    assert (t["points"], t["max_points"]) == (1, 3)
    table = capsys.readouterr().out
    assert "timeout" in table and "kernel died" in table and "malformed" in table and "not found" in table and "TOTAL" in table


def test_nothing_to_grade(tmp_path, capsys):
    assert grading.main([str(tmp_path)]) == 2
    assert "nothing to grade" in capsys.readouterr().err


def test_table_and_json_agree_without_running_anything():
    q = grading.QuestionGrade
    grades = [grading.NotebookGrade("a.ipynb", "graded", "", [q("00.q1", "correct", 1, 1), q("00.q2", "incorrect", 0, 1)]),
              grading.NotebookGrade("b.ipynb", "malformed", "not a readable notebook", [q("01.q1", "not_attempted", 0, 1)])]
    table = grading.format_table(grades)
    data = grading.to_json(grades)
    assert (data["points"], data["max_points"], data["percent"]) == (1, 3, 33.33)
    assert "33.3 %" in table and "1/3" in table and "malformed" in table and "not attempted" in table
    assert [n["points"] for n in data["notebooks"]] == [1, 0]


DENSE_04_Q3 = '''
def blocked_hybrid_attention(q, k, v, window, global_mask, block_size):
    T = q.shape[-2]
    i = torch.arange(T)
    allowed = (i[:, None] - i[None, :]).abs() <= window                              # (T, T)
    allowed = allowed | global_mask[:, None, :, None] | global_mask[:, None, None, :]  # (B, 1, T, T)
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5                                 # (B, H, T, T)
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1) @ v
'''


@pytest.mark.slow
def test_probes_run_in_the_graded_kernel_two_notebooks_at_a_time(tmp_path):
    """04.q3's memory probe and 03's loop probes watch the answer where it runs, in its kernel.

    A dense answer to 04.q3 gives the right values but is refused for its (T, T) scores; solved 03
    passes its loop probes. Graded two at a time: the probes once called the kernel from a worker
    thread and hung both notebooks until their deadline.
    """
    import shutil
    dense = _notebook(tmp_path / "04_dense.ipynb", "import torch\nfrom tutor import exercises",
                      DENSE_04_Q3, 'exercises.question("04.q3").check(blocked_hybrid_attention)')
    shutil.copy(ROOT / "solutions" / "03_unfold_vectorization.ipynb", tmp_path / "03_solved.ipynb")
    out = tmp_path / "grades.json"
    code = grading.main([str(tmp_path / "03_solved.ipynb"), str(dense), "--jobs", "2", "--deadline", "120",
                         "--json", str(out)])
    assert code == 0
    by_path = {Path(nb["path"]).name: nb for nb in json.loads(out.read_text())["notebooks"]}
    solved, mine = by_path["03_solved.ipynb"], by_path["04_dense.ipynb"]
    assert solved["status"] == "graded" and solved["points"] == solved["max_points"] == 5, solved
    q3 = next(q for q in mine["questions"] if q["id"] == "04.q3")
    assert mine["status"] == "graded" and q3["status"] == "incorrect", mine
    assert "memory probe" in q3["message"] and "block by block" in q3["message"], q3
