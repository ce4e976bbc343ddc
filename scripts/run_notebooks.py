"""Regenerate the stored outputs of course notebooks, the one way we ever do it.

    python scripts/run_notebooks.py                 # notebooks/ and solutions/
    python scripts/run_notebooks.py notebooks/03_unfold_vectorization.ipynb

Each notebook runs top to bottom in a fresh kernel of *this* environment (the CI one), with
the working directory set to the notebook's folder, 2 threads, and a per-cell time limit.
Outputs are written back in place; wall times are printed so the < 60 s budget stays visible.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["notebooks", "solutions"]


def notebook_paths(args):
    for a in args or DEFAULT:
        p = (ROOT / a) if not Path(a).is_absolute() else Path(a)
        if p.is_dir():
            yield from sorted(p.glob("*.ipynb"))
        else:
            yield p


def run(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ.update({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "0", "OMP_WAIT_POLICY": "PASSIVE",
                       "TQDM_DISABLE": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        elapsed = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    nbformat.write(nb, path)
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks/ solutions/)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    opts = ap.parse_args(argv)
    failed = 0
    for path in notebook_paths(opts.paths):
        try:
            print(f"{path.relative_to(ROOT)}: {run(path, opts.timeout):.1f} s", flush=True)
        except Exception as exc:  # report and go on: one broken notebook must not hide the others
            failed += 1
            print(f"{path.relative_to(ROOT)}: FAILED ({type(exc).__name__}: {str(exc)[:500]})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
