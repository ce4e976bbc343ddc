"""Benchmark every implementation of hybrid local + global attention against dense, over T.

    python -m tutor.bench --quick                                  # seconds: a smoke run
    python -m tutor.bench --T 1024 4096 16384 --csv cpu.csv --plot cpu.png
    python -m tutor bench --device cuda --dtype bfloat16 --impls dense,hybrid:triton,hybrid:flex
    python -m tutor bench --mode train --T 4096 16384             # forward + backward (training)

Implementations (``--impls``, comma separated): ``dense`` (PyTorch's
``scaled_dot_product_attention`` with the bool mask of :func:`tutor.masks.hybrid_mask`: the
masked dense baseline), ``looped`` (small T only), ``unfold``, ``flex_mask`` (compiled
FlexAttention with ``hybrid_mask_mod`` on the original positions: what a user writes first) and
``hybrid:<backend>`` for ``auto``, ``blocked``, ``flex``, ``triton``. All run forward only
(``torch.no_grad``), in this one process, on the same seeded inputs: warm-up calls first (they
include compilation), then the median of ``--repeats`` timed calls, synchronized on CUDA.

Peak memory is the extra memory one call needs on top of its inputs: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak resident set size of a fresh child process
per (impl, T) (Linux: the high-water mark is reset after warm-up via ``/proc/self/clear_refs``;
elsewhere ``ru_maxrss``, warm-up included). ``max_err`` and ``speedup_vs_dense`` compare with the
dense output; where dense would not fit (``--max-gb``) it is skipped, said so, and they are empty.
On CUDA the table also shows the roofline fraction ``max(FLOPs/peak, bytes/bandwidth) / time``.

``--mode train`` times one training step instead, forward + backward (:mod:`.train`): ``dense``,
``blocked:autograd`` and ``blocked:lean`` on the same inputs and the same seeded ``dO``; peak
memory is that of the whole step (the returned out, dq, dk, dv included), ``max_err`` the largest
difference from dense over out, dq, dk and dv, and a note per point gives the forward alone
(with autograd recording, as in training) and the backward share of the step.
"""
from __future__ import annotations

import argparse
import math
import sys
from functools import partial
from typing import Callable, Iterator, List, Optional, Sequence

import torch

from .gpu import gpu_peaks, roofline
from .memory import child_main, peak_mem_child, peak_mem_here
from .report import format_table, write_csv
from .runs import DEFAULT_IMPLS, Setting, backend_name, make_inputs, runner, why_skip
from .timing import time_side_by_side
from .train import TRAIN_GPU_IMPLS, TRAIN_IMPLS, train_backend_name, train_runners, train_why_skip

QUICK = dict(T=[128, 256], heads=2, head_dim=16, window=8, repeats=2, impls="dense,unfold,hybrid:auto")
MAX_T = 1 << 24                 # longest sequence a run may ask for (far past any machine's memory)


def check_options(opts) -> Optional[str]:
    """A message naming the bad option, or None."""
    if any(T < 1 or T > MAX_T for T in opts.T):
        return f"--T values must be from 1 to {MAX_T}, got {opts.T}"
    for name in ("window", "globals"):
        if getattr(opts, name) < 0:
            return f"--{name} must be >= 0, got {getattr(opts, name)}"
    for name in ("heads", "head_dim", "batch", "repeats", "threads"):
        if getattr(opts, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}"
    if opts.mode == "train":
        known = set(f"{TRAIN_IMPLS},{TRAIN_GPU_IMPLS}".split(","))
    else:
        known = set(DEFAULT_IMPLS.split(",")) | {"hybrid:triton"}
    bad = [i for i in (opts.impls or "").split(",") if i and i not in known]
    if bad:
        return f"--impls: unknown {bad}; choose from {sorted(known)}"
    if opts.impls is not None and not any(opts.impls.split(",")):
        return f"--impls names no implementation, got {opts.impls!r}; choose from {sorted(known)}"
    if opts.device is not None and (not _device_ok(opts.device)
                                    or torch.device(opts.device).type not in ("cpu", "cuda")):
        return f"--device must be cpu or cuda (cuda:N), got {opts.device!r}"
    for name in ("max_gb", "peak_tflops", "peak_gbps"):
        value = getattr(opts, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"--{name.replace('_', '-')} must be a finite number > 0, got {value}"
    return None


def _device_ok(device: str) -> bool:
    """Does torch read ``device`` as a device at all?"""
    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tutor.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["forward", "train"], default="forward",
                    help=f"forward: inference (no_grad); train: forward + backward of {TRAIN_IMPLS} "
                         f"(on CUDA also flex_mask, hybrid:flex, hybrid:triton)")
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 131072], help="sequence lengths")
    ap.add_argument("--window", type=int, default=64, help="one-sided window w")
    ap.add_argument("--heads", type=int, default=4, help="H")
    ap.add_argument("--head-dim", type=int, default=64, help="Dh")
    ap.add_argument("--batch", type=int, default=1, help="B")
    ap.add_argument("--globals", type=int, default=2, help="G global tokens per sequence (evenly spread)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--impls", default=None, help=f"comma separated (default: {DEFAULT_IMPLS}[,hybrid:triton on CUDA])")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per point (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (compilation happens here)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--max-gb", type=float, default=8.0, help="skip a run whose estimated memory exceeds this")
    ap.add_argument("--mem", choices=["auto", "none"], default="auto",
                    help="peak memory: auto = CUDA allocator / CPU child processes; none = skip")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU peak TFLOP/s (roofline), overrides the table")
    ap.add_argument("--peak-gbps", type=float, default=None, help="GPU peak memory GB/s (roofline)")
    ap.add_argument("--csv", default=None, help="write the results here")
    ap.add_argument("--plot", default=None, help="save log-log time and memory plots here (PNG)")
    ap.add_argument("--quick", action="store_true", help=f"tiny run: {QUICK}")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return ap


def _points(opts, device: str, impls: List[str], skip: Callable, notes: List[str], bar) -> Iterator[tuple]:
    """Per T: ``(s, (q, k, v, gm), kept)``, the setting, its seeded inputs and the impls that run there.

    ``skip(impl, s, q=q)`` gives the reason an impl does not run at ``s`` (or None); each skipped impl
    adds a note and ticks ``bar`` once.
    """
    for T in opts.T:
        s = Setting(opts.batch, opts.heads, T, opts.head_dim, opts.window, opts.globals, opts.dtype, device)
        q, k, v, gm = make_inputs(s)                          # (B, H, T, Dh) x 3, (B, T)
        kept = []
        for impl in impls:
            reason = skip(impl, s, q=q)
            if reason:
                notes.append(f"skipped {impl} at T={T}: {reason}")
                bar.update()
            else:
                kept.append(impl)
        yield s, (q, k, v, gm), kept


def _peak_mem(opts, impl: str, fn: Callable, s: Setting, mode: str) -> float:
    """Extra MB of one call of ``fn``: on CUDA here, on CPU in a child process; NaN with ``--mem none``."""
    if opts.mem == "none":
        return math.nan
    if s.device.startswith("cuda"):
        with torch.set_grad_enabled(mode == "train"):
            return peak_mem_here(fn, s.device, 0)
    return peak_mem_child(impl, s, opts.threads, mode=mode)


def _row(impl: str, backend: str, s: Setting, ms: dict, mem: float, err: float) -> dict:
    """One result row, with the columns of :data:`.report.COLUMNS`."""
    return dict(impl=impl.split(":")[0], backend=backend, device=s.device, dtype=s.dtype, B=s.B, H=s.H,
                T=s.T, Dh=s.Dh, window=s.window, G=s.G, time_ms=ms[impl], peak_mem_mb=mem,
                speedup_vs_dense=ms["dense"] / ms[impl] if "dense" in ms else math.nan, max_err=err)


def run(opts) -> List[dict]:
    """Measure every (T, impl); returns the rows (dicts with ``COLUMNS``) and prints the table."""
    from tqdm.auto import tqdm
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(opts.threads)
    if opts.mode == "train":
        return run_train(opts, device)
    impls = (opts.impls or DEFAULT_IMPLS + (",hybrid:triton" if device.startswith("cuda") else "")).split(",")
    peaks = gpu_peaks(opts) if device.startswith("cuda") else None
    rows, notes, roof = [], [], {}
    bar = tqdm(total=len(opts.T) * len(impls), desc="bench", unit="run")
    skip = partial(why_skip, max_gb=opts.max_gb)
    for s, (q, k, v, gm), kept in _points(opts, device, impls, skip, notes, bar):
        T = s.T
        fns = {impl: runner(impl, s, q, k, v, gm) for impl in kept}
        bar.set_postfix_str(f"T={T}: timing {len(fns)} impls")
        warm = {i: opts.warmup if ("flex" in i or i == "hybrid:auto") else min(opts.warmup, 1) for i in fns}
        with torch.no_grad():
            ms, outs = time_side_by_side(fns, device, opts.repeats, warm)
        ref = outs["dense"].float() if "dense" in outs else None
        for impl, fn in fns.items():
            bar.set_postfix_str(f"T={T} {impl}: memory")
            mem = _peak_mem(opts, impl, fn, s, mode="forward")
            err = (outs[impl].float() - ref).abs().max().item() if ref is not None else math.nan
            rows.append(_row(impl, backend_name(impl, s, q), s, ms, mem, err))
            if peaks is not None:
                roof[len(rows) - 1] = f"{100 * roofline(s, ms[impl], peaks):.1f}%"
            bar.update()
        if ref is None and "dense" in impls:
            notes.append(f"T={T}: no dense reference, so no speedup_vs_dense or max_err")
        del fns, outs, ref
    bar.close()
    if device.startswith("cuda") and peaks is None:
        notes.append("roofline: unknown GPU; pass --peak-tflops and --peak-gbps")
    print(format_table(rows, notes, roof or None))
    return rows


def run_train(opts, device: str) -> List[dict]:
    """``--mode train``: one forward + backward step per (T, impl), timed side by side; prints the table."""
    from tqdm.auto import tqdm
    gpu_extra = "," + ",".join(TRAIN_GPU_IMPLS.split(",")[:3]) if device.startswith("cuda") else ""
    impls = (opts.impls or TRAIN_IMPLS + gpu_extra).split(",")
    rows, notes = [], []
    bar = tqdm(total=len(opts.T) * len(impls), desc="bench train", unit="run")
    skip = partial(train_why_skip, max_gb=opts.max_gb)
    for s, (q, k, v, gm), kept in _points(opts, device, impls, skip, notes, bar):
        T = s.T
        fns = {}
        for impl in kept:
            forward, step = train_runners(impl, s, q, k, v, gm)
            fns[impl], fns["forward " + impl] = step, forward
        bar.set_postfix_str(f"T={T}: timing {len(fns) // 2} impls")
        ms, outs = time_side_by_side(fns, device, opts.repeats, min(opts.warmup, 1))
        ref = outs.get("dense")
        for impl in kept:
            bar.set_postfix_str(f"T={T} {impl}: memory")
            mem = _peak_mem(opts, impl, fns[impl], s, mode="train")
            err = (max((a.float() - b.float()).abs().max().item() for a, b in zip(outs[impl], ref))
                   if ref is not None else math.nan)
            rows.append(_row(impl, train_backend_name(impl, s, q), s, ms, mem, err))
            fwd = ms["forward " + impl]
            notes.append(f"T={T} {impl}: forward {fwd:.2f} ms, backward {ms[impl] - fwd:.2f} ms "
                         f"({(ms[impl] - fwd) / fwd:.2f}x the forward)")
            bar.update()
        if ref is None and "dense" in impls:
            notes.append(f"T={T}: no dense reference, so no speedup_vs_dense or max_err")
        del fns, outs, ref
    bar.close()
    q_mb = opts.batch * opts.heads * opts.head_dim * 4 / 2**20
    notes.append("time: one step, forward + backward; peak MB: extra memory of that step; size of q: "
                 + ", ".join(f"{q_mb * T:.3g} MB at T={T}" for T in opts.T)
                 + "; backward = median step - median forward")
    print(format_table(rows, notes))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tutor.bench``; returns the exit code."""
    opts = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if opts.child:
        return child_main(opts.child)
    if opts.quick:                                    # quick sizes, unless given explicitly
        for key, val in QUICK.items():
            if key == "impls" and opts.mode == "train":               # train has its own list
                continue
            if getattr(opts, key) == build_parser().get_default(key):
                setattr(opts, key, val)
    problem = check_options(opts)
    if problem:
        print(f"python -m tutor.bench: {problem}", file=sys.stderr)
        return 2
    if opts.device and opts.device.startswith("cuda") and not torch.cuda.is_available():
        print("python -m tutor.bench: --device cuda asked for, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    rows = run(opts)
    if opts.csv:
        write_csv(opts.csv, rows)
        print(f"wrote {opts.csv}")
    if opts.plot and rows:
        from ..viz.blocks import plot_benchmark
        plot_benchmark(rows).savefig(opts.plot)
        print(f"wrote {opts.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
