"""Several processes checking at once lose no attempt and no solved flag (fcntl lock + merge on write)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys
from tutor.exercises import feedback, progress
who, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    progress.record(feedback.Result(f"{who}.q{k}", "incorrect", ""))
    progress.record(feedback.Result(f"{who}.q{k}", "correct", ""))
    progress.record(feedback.Result("shared", "incorrect", ""))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    pfile = tmp_path / "progress.json"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TUTOR_PROGRESS_FILE": str(pfile)}
    writers, n = 4, 12
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"w{i}", str(n)], env=env) for i in range(writers)]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    entries = json.loads(pfile.read_text())["questions"]
    for i in range(writers):
        for k in range(n):
            e = entries[f"w{i}.q{k}"]
            assert e["solved"] is True and e["attempts"] == 2, (i, k, e)
    assert entries["shared"]["attempts"] == writers * n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json", "progress.json.lock"]
