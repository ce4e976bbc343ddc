"""Shared pytest set-up. `--nbval` is on by default (pyproject.toml) for the course notebooks
under notebooks/; notebooks kept under tests/ are fixtures for other tests, never nbval targets."""
collect_ignore_glob = ["*.ipynb"]
