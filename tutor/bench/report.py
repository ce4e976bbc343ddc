"""The benchmark's results: the printed table, the CSV it writes and the one loader that reads CSVs back.

:func:`load_benchmarks` is what notebooks and the cost explorer use to read ``docs/benchmarks/*.csv``.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

COLUMNS = ("impl", "backend", "device", "dtype", "B", "H", "T", "Dh", "window", "G", "time_ms",
           "peak_mem_mb", "speedup_vs_dense", "max_err")
BENCH_DIR = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
BENCH_SHAPE = ("B", "H", "T", "Dh", "window", "G")                   # required in every row
BENCH_RESULTS = ("time_ms", "peak_mem_mb", "speedup_vs_dense", "max_err")  # empty -> NaN


def format_table(rows: List[dict], notes: List[str], extra: Optional[Dict[int, str]] = None) -> str:
    """The printed table: one line per (impl, T)."""
    head = f"{'impl':<16}{'backend':<14}{'T':>8}{'time ms':>12}{'peak MB':>10}{'speedup':>9}{'max err':>10}"
    lines = [head + ("  roofline" if extra else ""), "-" * (len(head) + (10 if extra else 0))]
    for n, r in enumerate(rows):
        def f(key, fmt):
            ok = isinstance(r[key], float) and math.isfinite(r[key])
            return format(r[key], fmt) if ok else format("-", ">" + fmt.split(".")[0])
        lines.append(f"{r['impl']:<16}{r['backend']:<14}{r['T']:>8}{f('time_ms', '12.2f')}{f('peak_mem_mb', '10.1f')}"
                     f"{f('speedup_vs_dense', '9.1f')}{f('max_err', '10.1e')}" + (f"  {extra[n]}" if extra else ""))
    return "\n".join(lines + [""] + notes)


def write_csv(path: str, rows: List[dict]) -> None:
    """The rows as CSV with ``COLUMNS``; NaN (skipped, not measured) becomes an empty cell."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if isinstance(r[c], float) and not math.isfinite(r[c]) else
                            f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def load_benchmarks(paths: Optional[Iterable] = None) -> List[dict]:
    """Rows of benchmark CSVs (default ``docs/benchmarks/*.csv``), numbers as floats.

    ``paths``: CSV files; a bare name such as ``"cpu.csv"`` that is not a file here is looked up in
    ``docs/benchmarks/``. Missing or unreadable files and rows without a numeric shape
    (B, H, T, Dh, window, G) are skipped, so the result is ``[]`` when nothing has been measured
    yet; an empty or invalid result (``time_ms``, ``peak_mem_mb``, ...) becomes NaN.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = sorted(BENCH_DIR.glob("*.csv")) if paths is None else [Path(p) for p in paths]
    files = [f if f.exists() or f.is_absolute() or len(f.parts) > 1 else BENCH_DIR / f for f in files]
    rows = []
    for f in files:
        try:
            with open(f, newline="") as fh:
                for raw in csv.DictReader(fh):
                    row = {**raw, **{k: _number(raw.get(k)) for k in BENCH_SHAPE + BENCH_RESULTS}}
                    if raw.get("impl") and all(math.isfinite(row[k]) for k in BENCH_SHAPE):
                        rows.append(row)
        except (OSError, csv.Error, UnicodeDecodeError):
            continue
    return rows
