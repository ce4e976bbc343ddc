"""Benchmark every implementation of hybrid attention against dense, over T (``python -m tutor bench``).

One module per concern:

* :mod:`.runs` - a benchmark point (:class:`Setting`), its seeded inputs, and the callable of each impl.
* :mod:`.timing` - warm-up, synchronisation and side-by-side median timing.
* :mod:`.train` - ``--mode train``: one forward + backward step per implementation.
* :mod:`.memory` - the peak extra memory of one call (CUDA allocator, or a fresh CPU child process),
  and what autograd saves for the backward pass.
* :mod:`.gpu` - spec-sheet peaks of common GPUs and the roofline fraction.
* :mod:`.report` - the printed table and the CSV (written by the CLI, read back by :func:`load_benchmarks`).
* :mod:`.cli` - the command line: options, the measuring loop, ``main``.
"""
from .cli import DEFAULT_IMPLS, QUICK, build_parser, check_options, main, run
from .gpu import GPU_PEAKS, gpu_peaks, roofline
from .memory import peak_mem_child, peak_mem_here, saved_bytes, saved_tensors
from .report import BENCH_DIR, COLUMNS, format_table, load_benchmarks, write_csv
from .runs import (LOOPED_MAX_T, Setting, backend_name, global_positions, make_inputs, memory_estimate_gb,
                   runner, why_skip)
from .timing import sync, time_side_by_side

__all__ = ["DEFAULT_IMPLS", "QUICK", "build_parser", "check_options", "main", "run", "GPU_PEAKS", "gpu_peaks",
           "roofline", "peak_mem_child", "peak_mem_here", "saved_bytes", "saved_tensors", "BENCH_DIR", "COLUMNS", "format_table",
           "load_benchmarks", "write_csv", "LOOPED_MAX_T", "Setting", "backend_name", "global_positions",
           "make_inputs", "memory_estimate_gb", "runner", "why_skip", "sync", "time_side_by_side"]
