"""Shared pytest set-up. `--nbval` is on by default (pyproject.toml) for the course notebooks
under notebooks/; notebooks kept under tests/ are fixtures for other tests, never nbval targets."""
import pytest

collect_ignore_glob = ["*.ipynb"]


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """No test writes to the user's real progress file or to a grader's results file."""
    monkeypatch.setenv("TUTOR_PROGRESS_FILE", str(tmp_path / "progress.json"))
    monkeypatch.delenv("TUTOR_GRADE_RESULTS", raising=False)

import os

# Kernels started by nbval and the grader inherit this: with only 2 cores shared by several
# processes, OpenMP threads that spin while waiting slow training cells down 5-7x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
