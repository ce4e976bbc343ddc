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
    assert sorted(os.listdir(pfile.parent)) == ["progress.json", "progress.json.lock"]   # no temporary file left


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TUTOR_PROGRESS_FILE", raising=False)
    from platformdirs import user_data_dir
    assert progress.progress_path() == __import__("pathlib").Path(user_data_dir("tutor", appauthor=False)) / "progress.json"
    monkeypatch.setitem(sys.modules, "platformdirs", None)          # not installed
    monkeypatch.setenv("HOME", str(tmp_path))
    assert progress.progress_path() == tmp_path / ".local" / "share" / "tutor" / "progress.json"


def test_keep_progress_off_saves_nothing(pfile):
    exercises.keep_progress(False)
    try:
        _solve_00q3()
    finally:
        exercises.keep_progress(True)
    assert not pfile.exists()
    _solve_00q3()
    assert pfile.exists()


def test_a_check_hands_nothing_to_a_grader(pfile, tmp_path, monkeypatch):
    """The old channel (a results file named in the kernel's environment) is gone: grading judges
    answers in its own process, so nothing a kernel writes can become a verdict."""
    log = tmp_path / "grade.jsonl"
    monkeypatch.setenv("TUTOR_GRADE_RESULTS", str(log))
    _solve_00q3()
    assert not log.exists()


# --------------------------------------------------------------------------- hostile files, per notebook, reset
def _hostile(path, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "1e400":
        path.write_text('{"version": 1, "questions": {"00.q3": {"attempts": 1e400, "solved": true}}}')
    elif kind == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", path)
    elif kind == "huge":
        path.write_bytes(b" " * (progress.MAX_BYTES + 10))


@pytest.mark.parametrize("kind", ["1e400", "nested", "fifo", "dev-zero", "huge"])
def test_hostile_progress_file_warns_never_raises_or_hangs(pfile, kind):
    import time
    _hostile(pfile, kind)
    start = time.monotonic()
    with pytest.warns(ProgressWarning):
        assert progress.load() == {"version": 1, "questions": {}}
    with pytest.warns(ProgressWarning):
        tutor.progress()
    with pytest.warns(ProgressWarning):
        assert _solve_00q3().status == "correct"
    assert time.monotonic() - start < 20
    if kind in ("1e400", "nested", "dev-zero", "huge"):        # moved aside as a backup, then a fresh file
        backups = [p for p in os.listdir(pfile.parent) if ".corrupt-" in p]
        assert len(backups) == 1
        assert json.loads(pfile.read_text())["questions"]["00.q3"]["solved"] is True


def test_corrupt_file_is_kept_as_a_backup(pfile):
    pfile.parent.mkdir(parents=True)
    pfile.write_text("{half a file")
    with pytest.warns(ProgressWarning, match="kept it as"):
        _solve_00q3()
    (backup,) = [p for p in pfile.parent.iterdir() if ".corrupt-" in p.name]
    assert backup.read_text() == "{half a file"


def test_progress_of_one_notebook_and_reset(pfile, capsys):
    _solve_00q3()
    exercises.question("01.q2").check(lambda T, window, g: 0)
    capsys.readouterr()
    tutor.progress("00")
    out = capsys.readouterr().out
    assert "Solved 1 of 3 questions of notebook 00." in out and "01.q2" not in out
    tutor.progress("01")
    out = capsys.readouterr().out
    assert "Solved 0 of 4 questions of notebook 01." in out and "01.q2   tried" in out
    with pytest.raises(ValueError, match="notebook"):
        tutor.progress("three")
    assert progress.reset("01") == 1
    assert [s for i, _, s in progress.progress_rows() if i in ("00.q3", "01.q2")] == ["solved", "not yet"]
    assert progress.reset() == 1
    assert all(s == "not yet" for _, _, s in progress.progress_rows())


def test_command_line_shows_and_resets(pfile):
    import subprocess
    _solve_00q3()
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "tutor", "progress", *a], capture_output=True,
                                    text=True, env=env, timeout=120)
    shown = run("--notebook", "00")
    assert shown.returncode == 0 and "Solved 1 of 3 questions of notebook 00." in shown.stdout
    reset = run("--notebook", "00", "--reset")
    assert reset.returncode == 0 and "1 question(s) forgotten" in reset.stdout
    assert "Solved 0 of 3" in run("--notebook", "00").stdout
    assert run("--notebook", "x").returncode == 2
