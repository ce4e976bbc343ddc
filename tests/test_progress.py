"""Progress: saved atomically to a JSON file (TUTOR_PROGRESS_FILE in tests), shown on demand, and a
corrupt or unreadable file only ever gives a warning and a fresh start."""
from __future__ import annotations

import json
import os
import sys

import pytest

import tutor
from tutor import exercises
from tutor.exercises import progress
from tutor.exercises.progress import ProgressWarning


@pytest.fixture
def pfile(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "progress.json"
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(path))
    monkeypatch.delenv("TUTOR_GRADE_RESULTS", raising=False)
    return path


def _solve_00q3():
    return exercises.question("00.q3").check(768)


def test_check_records_progress_and_solved_sticks(pfile):
    q = exercises.question("00.q3")
    q.check(700)
    q.check(768)
    q.check(700)
    q.check(None)
    entry = json.loads(pfile.read_text())["questions"]["00.q3"]
    assert entry["solved"] is True and entry["status"] == "not_attempted" and entry["attempts"] == 3
    assert [s for i, _, s in progress.progress_rows() if i == "00.q3"] == ["solved"]
    assert [s for i, _, s in progress.progress_rows() if i == "00.q1"] == ["not yet"]


def test_show_progress_lists_every_question(pfile, capsys):
    _solve_00q3()
    exercises.question("00.q2").check(lambda T, window: 0)
    tutor.progress()
    out = capsys.readouterr().out
    n = len(list(exercises.questions()))
    assert f"Solved 1 of {n} questions." in out
    assert all(q.id in out for q in exercises.questions())
    assert "00.q2   tried" in out and "00.q3   solved" in out


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2, 3]", b'{"questions": {"00.q1": 5}}', b"\xff\xfe\x00"])
def test_corrupt_file_warns_and_starts_fresh(pfile, content):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(content)
    with pytest.warns(ProgressWarning, match="starting fresh"):
        assert progress.load() == {"version": 1, "questions": {}}
    with pytest.warns(ProgressWarning):
        assert _solve_00q3().status == "correct"
    assert json.loads(pfile.read_text())["questions"]["00.q3"]["solved"] is True


def test_unreadable_file_never_raises(pfile):
    pfile.mkdir(parents=True)                       # a folder where the file should be
    with pytest.warns(ProgressWarning):
        assert progress.load()["questions"] == {}
    with pytest.warns(ProgressWarning) as caught:
        assert _solve_00q3().status == "correct"
    assert any("could not save" in str(w.message) for w in caught)
    with pytest.warns(ProgressWarning):
        exercises.show_progress()


def test_write_is_atomic(pfile, monkeypatch):
    _solve_00q3()
    before = pfile.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.warns(ProgressWarning, match="disk full"):
        exercises.question("00.q1").check(lambda T, window: None)
    assert pfile.read_bytes() == before             # the old file is intact
    assert os.listdir(pfile.parent) == ["progress.json"]   # and no temporary file is left


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TUTOR_PROGRESS_FILE", raising=False)
    from platformdirs import user_data_dir
    assert progress.progress_path() == __import__("pathlib").Path(user_data_dir("tutor", appauthor=False)) / "progress.json"
    monkeypatch.setitem(sys.modules, "platformdirs", None)          # not installed
    monkeypatch.setenv("HOME", str(tmp_path))
    assert progress.progress_path() == tmp_path / ".local" / "share" / "tutor" / "progress.json"


def test_results_are_handed_to_a_listening_grader(pfile, tmp_path, monkeypatch):
    log = tmp_path / "grade.jsonl"
    monkeypatch.setenv("TUTOR_GRADE_RESULTS", str(log))
    _solve_00q3()
    exercises.question("00.q1").check(None)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in records] == [("00.q3", "correct"), ("00.q1", "not_attempted")]


def test_keep_progress_off_saves_nothing_but_still_reports_to_the_grader(pfile, tmp_path, monkeypatch):
    log = tmp_path / "grade.jsonl"
    monkeypatch.setenv("TUTOR_GRADE_RESULTS", str(log))
    exercises.keep_progress(False)
    try:
        _solve_00q3()
    finally:
        exercises.keep_progress(True)
    assert not pfile.exists()
    assert json.loads(log.read_text())["status"] == "correct"
    _solve_00q3()
    assert pfile.exists()
