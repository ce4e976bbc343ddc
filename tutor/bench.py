"""Benchmark every implementation of hybrid local + global attention against dense, over T.

    python -m tutor.bench --quick                                  # seconds: a smoke run
    python -m tutor.bench --T 1024 4096 16384 --csv cpu.csv --plot cpu.png
    python -m tutor bench --device cuda --dtype bfloat16 --impls dense,hybrid:triton,hybrid:flex

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
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

COLUMNS = ("impl", "backend", "device", "dtype", "B", "H", "T", "Dh", "window", "G", "time_ms",
           "peak_mem_mb", "speedup_vs_dense", "max_err")
DEFAULT_IMPLS = "dense,looped,unfold,flex_mask,hybrid:blocked,hybrid:flex,hybrid:auto"
QUICK = dict(T=[128, 256], heads=2, head_dim=16, window=8, repeats=2, impls="dense,unfold,hybrid:auto")
LOOPED_MAX_T = 1024
#: spec-sheet peaks: name fragment -> (dense fp16/bf16 tensor TFLOP/s, fp32 TFLOP/s, memory GB/s)
GPU_PEAKS = {"H200": (989.0, 67.0, 4800.0), "H100 PCIe": (756.0, 51.0, 2000.0), "H100": (989.0, 67.0, 3350.0),
             "A100-SXM4-80GB": (312.0, 19.5, 2039.0), "A100": (312.0, 19.5, 1555.0), "L40S": (362.0, 91.6, 864.0),
             "L4": (121.0, 30.3, 300.0), "A10": (125.0, 31.2, 600.0), "T4": (65.0, 8.1, 320.0),
             "V100": (125.0, 15.7, 900.0), "RTX 4090": (165.0, 82.6, 1008.0)}


@dataclass(frozen=True)
class Setting:
    """One benchmark point: shapes and masks shared by every implementation."""
    B: int
    H: int
    T: int
    Dh: int
    window: int
    G: int
    dtype: str
    device: str


def global_positions(T: int, G: int) -> List[int]:
    """G global tokens spread evenly: positions ``i * T // G`` (0 and T/2 for G = 2)."""
    return sorted({i * T // G for i in range(G)}) if G else []


def make_inputs(s: Setting, seed: int = 0):
    """Seeded q, k, v (B, H, T, Dh) and the (B, T) global mask of a setting."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(s.B, s.H, s.T, s.Dh, generator=g).to(device=s.device, dtype=getattr(torch, s.dtype))
               for _ in range(3))
    gm = torch.zeros(s.B, s.T, dtype=torch.bool)
    gm[:, global_positions(s.T, s.G)] = True
    return q, k, v, gm.to(s.device)


def allowed_pairs(T: int, window: int, positions: Sequence[int], causal: bool = False) -> int:
    """Allowed (query, key) pairs of one sequence under SPEC.md, in O(T * G) (no T x T mask)."""
    i = torch.arange(T)
    lo = (i - window).clamp(min=0)
    hi = i if causal else (i + window).clamp(max=T - 1)
    count = hi - lo + 1                                                    # local keys per row
    g = torch.tensor(sorted(set(positions)), dtype=torch.long)
    if g.numel():
        outside = (g[None, :] < lo[:, None]) | (g[None, :] > hi[:, None])  # (T, G) not in window
        if causal:
            outside &= g[None, :] <= i[:, None]
        count = count + outside.sum(1)
        count[g] = (g + 1) if causal else T                                # global rows read all
    return int(count.sum())


def memory_estimate_gb(impl: str, s: Setting) -> float:
    """Rough bytes an implementation holds at once, to skip runs that cannot fit."""
    rows = s.B * s.H * s.T
    if impl == "dense":       # SDPA's fused CPU/GPU kernels: the bool mask and its float copy
        return 5 * s.B * s.T * s.T / 1e9
    if impl == "unfold":      # K and V windows (B, H, T, 2w+1, Dh) and the scores
        return 2 * rows * (2 * s.window + 1) * (s.Dh + 2) * 4 / 1e9
    return 12 * rows * s.Dh * 4 / 1e9


def runner(impl: str, s: Setting, q, k, v, gm) -> Callable[[], torch.Tensor]:
    """A no-argument callable computing the forward of ``impl`` on these inputs."""
    from .attention import hybrid_attention, looped_attention, unfold_attention
    from .attention.flex import flex_hybrid_attention
    from .masks import hybrid_mask
    if impl == "dense":
        mask = hybrid_mask(s.T, s.window, gm, device=q.device)[:, None]    # (B, 1, T, T)
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if impl == "looped":
        return lambda: looped_attention(q, k, v, s.window, gm)
    if impl == "unfold":
        return lambda: unfold_attention(q, k, v, s.window, gm)
    if impl == "flex_mask":
        return lambda: flex_hybrid_attention(q, k, v, s.window, gm, layout="in_place")
    if impl.startswith("hybrid:"):
        backend = impl.split(":", 1)[1]
        return lambda: hybrid_attention(q, k, v, s.window, gm, backend=backend)
    raise ValueError(f"unknown impl {impl!r}; choose from {DEFAULT_IMPLS},hybrid:triton")


def backend_name(impl: str, s: Setting, q) -> str:
    """The ``backend`` column: what actually ran."""
    if impl.startswith("hybrid:"):
        from .attention import choose_backend
        name = impl.split(":", 1)[1]
        return f"auto:{choose_backend(q, 'auto').name}" if name == "auto" else name
    return {"dense": "sdpa", "looped": "python", "unfold": "torch", "flex_mask": "flex"}[impl]


def why_skip(impl: str, s: Setting, q, max_gb: float) -> Optional[str]:
    """None if ``impl`` should run at this setting, else the reason it is skipped."""
    if impl == "looped" and s.T > LOOPED_MAX_T:
        return f"looped only up to T={LOOPED_MAX_T}"
    need = memory_estimate_gb(impl, s)
    if need > max_gb:
        return f"needs ~{need:.3g} GB > --max-gb {max_gb:g}"
    if impl in ("flex_mask",) or impl.startswith("hybrid:") and impl != "hybrid:auto":
        from .attention.hybrid import BACKENDS
        name = "flex" if impl == "flex_mask" else impl.split(":", 1)[1]
        if name not in BACKENDS:
            return f"no backend {name!r}"
        return BACKENDS[name].why_not(q, False, False)
    return None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_side_by_side(fns: Dict[str, Callable], device: str, repeats: int, warmup: Dict[str, int]):
    """Median wall ms of each ``fns[name]()``, repeats interleaved so load changes hit all alike.

    Each function first runs ``warmup[name]`` untimed calls (compilation happens there); every
    timed call is synchronized. Returns ``({name: ms}, {name: output of its last call})``.
    """
    for name, fn in fns.items():
        for _ in range(warmup[name]):
            fn()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    outs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}, outs


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _release_free_memory() -> None:
    """Hand memory freed by earlier calls back to the OS (glibc), so it cannot hide a peak."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):                                     # not glibc: nothing to do
        pass


def peak_mem_here(fn: Callable, device: str, warmup: int) -> float:
    """Extra MB one call of ``fn`` needs, measured in this process (CUDA, or a CPU child)."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _release_free_memory()                                                # so the call must fault in its pages
    try:                                                                  # Linux: reset the high-water mark
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _rss_kb("VmRSS")
        fn()
        return max(0, _rss_kb("VmHWM") - base) / 1024                    # RSS may dip below base
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def peak_mem_child(impl: str, s: Setting, threads: int, timeout: float = 900) -> float:
    """Run ``impl`` once in a fresh Python (same seed) and return its peak extra MB (NaN on failure)."""
    spec = json.dumps({"impl": impl, "setting": s.__dict__, "threads": threads})
    try:
        res = subprocess.run([sys.executable, "-m", "tutor.bench", "--child", spec], capture_output=True,
                             text=True, timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})
        return float(res.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return math.nan


def _child(spec: str) -> int:
    d = json.loads(spec)
    torch.set_num_threads(d["threads"])
    s = Setting(**d["setting"])
    q, k, v, gm = make_inputs(s)
    with torch.no_grad():
        print(peak_mem_here(runner(d["impl"], s, q, k, v, gm), s.device, warmup=2 if "flex" in d["impl"] or d["impl"] == "hybrid:auto" else 1))
    return 0


def roofline(s: Setting, ms: float, peaks) -> float:
    """Fraction of the roofline bound reached: max(FLOPs/peak, bytes/bandwidth) / time."""
    flops = 4 * s.B * s.H * s.Dh * allowed_pairs(s.T, s.window, global_positions(s.T, s.G))
    nbytes = 4 * s.B * s.H * s.T * s.Dh * torch.tensor([], dtype=getattr(torch, s.dtype)).element_size()
    tflops = peaks[0] if s.dtype in ("float16", "bfloat16") else peaks[1]
    return max(flops / (tflops * 1e12), nbytes / (peaks[2] * 1e9)) / (ms / 1e3)


def gpu_peaks(opts) -> Optional[tuple]:
    if opts.peak_tflops and opts.peak_gbps:
        return (opts.peak_tflops, opts.peak_tflops, opts.peak_gbps)
    name = torch.cuda.get_device_name()
    return next((p for key, p in GPU_PEAKS.items() if key in name), None)


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if isinstance(r[c], float) and not math.isfinite(r[c]) else
                            f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})


def check_options(opts) -> Optional[str]:
    """A message naming the bad option, or None."""
    if any(T < 1 for T in opts.T):
        return f"--T values must be positive, got {opts.T}"
    for name in ("window", "globals"):
        if getattr(opts, name) < 0:
            return f"--{name} must be >= 0, got {getattr(opts, name)}"
    for name in ("heads", "head_dim", "batch", "repeats", "threads"):
        if getattr(opts, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}"
    known = set(DEFAULT_IMPLS.split(",")) | {"hybrid:triton"}
    bad = [i for i in (opts.impls or "").split(",") if i and i not in known]
    if bad:
        return f"--impls: unknown {bad}; choose from {sorted(known)}"
    return None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tutor.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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


def run(opts) -> List[dict]:
    """Measure every (T, impl); returns the rows (dicts with ``COLUMNS``) and prints the table."""
    from tqdm.auto import tqdm
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(opts.threads)
    impls = (opts.impls or DEFAULT_IMPLS + (",hybrid:triton" if device.startswith("cuda") else "")).split(",")
    peaks = gpu_peaks(opts) if device.startswith("cuda") else None
    rows, notes, roof = [], [], {}
    bar = tqdm(total=len(opts.T) * len(impls), desc="bench", unit="run")
    for T in opts.T:
        s = Setting(opts.batch, opts.heads, T, opts.head_dim, opts.window, opts.globals, opts.dtype, device)
        q, k, v, gm = make_inputs(s)
        fns = {}
        for impl in impls:
            reason = why_skip(impl, s, q, opts.max_gb)
            if reason:
                notes.append(f"skipped {impl} at T={T}: {reason}")
                bar.update()
            else:
                fns[impl] = runner(impl, s, q, k, v, gm)
        bar.set_postfix_str(f"T={T}: timing {len(fns)} impls")
        warm = {i: opts.warmup if ("flex" in i or i == "hybrid:auto") else min(opts.warmup, 1) for i in fns}
        with torch.no_grad():
            ms, outs = time_side_by_side(fns, device, opts.repeats, warm)
        ref = outs["dense"].float() if "dense" in outs else None
        for impl, fn in fns.items():
            bar.set_postfix_str(f"T={T} {impl}: memory")
            if opts.mem == "none":
                mem = math.nan
            elif device.startswith("cuda"):
                with torch.no_grad():
                    mem = peak_mem_here(fn, device, 0)
            else:
                mem = peak_mem_child(impl, s, opts.threads)
            err = (outs[impl].float() - ref).abs().max().item() if ref is not None else math.nan
            rows.append(dict(impl=impl.split(":")[0], backend=backend_name(impl, s, q), device=device,
                             dtype=opts.dtype, B=s.B, H=s.H, T=T, Dh=s.Dh, window=s.window, G=s.G,
                             time_ms=ms[impl], peak_mem_mb=mem,
                             speedup_vs_dense=ms["dense"] / ms[impl] if "dense" in ms else math.nan, max_err=err))
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tutor.bench``; returns the exit code."""
    opts = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if opts.child:
        return _child(opts.child)
    if opts.quick:                                    # quick sizes, unless given explicitly
        for key, val in QUICK.items():
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
        from .viz.blocks import plot_benchmark
        plot_benchmark(rows).savefig(opts.plot)
        print(f"wrote {opts.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
