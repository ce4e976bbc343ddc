"""Shared pytest set-up. `--nbval` is on by default (pyproject.toml) for the course notebooks
under notebooks/; notebooks kept under tests/ are fixtures for other tests, never nbval targets."""
collect_ignore_glob = ["*.ipynb"]

import os

# Kernels started by nbval and the grader inherit this: with only 2 cores shared by several
# processes, OpenMP threads that spin while waiting slow training cells down 5-7x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
