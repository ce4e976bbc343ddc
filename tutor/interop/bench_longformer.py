"""Speed and memory of our attention swapped into a Longformer layer, against Longformer's own.

    python -m tutor.interop.bench_longformer --T 4096 16384          # longformer-base shapes, CPU

One ``LongformerSelfAttention`` of a randomly initialised ``LongformerModel`` config (by default
longformer-base's: dim 768, 12 heads, attention_window 512 so w = 256) and the same weights in
:class:`~tutor.interop.LongformerSelfAttentionSwap`, called on the same hidden states and masks
(``G`` global tokens: position 0, the [CLS] token, then spread evenly). For each T both run side by
side in this process (warm-up, repeats interleaved, median); the peak memory of one call is measured
in a fresh child process per (impl, T) on CPU (the allocator's counters on CUDA). ``max err`` is the
largest difference between the two outputs. Needs transformers (``pip install -e ".[peers]"``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..bench.memory import peak_mem_here
from ..bench.runs import global_positions                          # [CLS] at 0, the others spread evenly
from ..bench.timing import time_side_by_side
from ..conventions import longformer_layer_inputs
from .longformer import LongformerSelfAttentionSwap

IMPLS = ("longformer", "ours")


@dataclass(frozen=True)
class Point:
    """One benchmark point: shapes of one Longformer self-attention call."""
    T: int
    B: int = 1
    dim: int = 768
    heads: int = 12
    attention_window: int = 512
    G: int = 2
    backend: str = "auto"
    device: str = "cpu"
    backward: bool = False


def make_pair(p: Point, seed: int = 0) -> Tuple[Callable, Callable, Dict[str, torch.Tensor]]:
    """Longformer's self-attention, ours with the same weights, and the call's inputs (seeded)."""
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention
    torch.manual_seed(seed)
    config = LongformerConfig(hidden_size=p.dim, num_attention_heads=p.heads, attention_window=[p.attention_window],
                              attention_probs_dropout_prob=0.0)
    theirs = LongformerSelfAttention(config, layer_id=0).to(p.device).eval()
    ours = LongformerSelfAttentionSwap.from_longformer(theirs, backend=p.backend).eval()
    T = -(-p.T // p.attention_window) * p.attention_window                # LongformerModel pads T to this
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p.B, T, p.dim, generator=g).to(p.device)              # (B, T, dim)
    glob = torch.zeros(p.B, T, dtype=torch.bool)
    glob[:, global_positions(p.T, p.G)] = True
    pad = torch.zeros(p.B, T, dtype=torch.bool)
    pad[:, p.T:] = True
    inputs = {"hidden_states": x, **longformer_layer_inputs(glob.to(p.device), pad.to(p.device))}
    return theirs, ours, inputs


def call(module, inputs, backward: bool) -> Callable[[], torch.Tensor]:
    """A no-argument forward (or forward + backward) of ``module`` on ``inputs``."""
    if not backward:
        def forward():
            with torch.no_grad():
                return module(**inputs)[0]
        return forward
    x = inputs["hidden_states"].detach().requires_grad_(True)

    def forward_backward():
        out = module(**{**inputs, "hidden_states": x})[0]
        out.sum().backward()
        return out.detach()
    return forward_backward


def measure_memory_child(impl: str, p: Point, threads: int, timeout: float = 1800) -> float:
    """Peak extra MB of one call of ``impl`` in a fresh Python (NaN when it fails)."""
    spec = json.dumps({"impl": impl, "point": asdict(p), "threads": threads})
    try:
        res = subprocess.run([sys.executable, "-m", "tutor.interop.bench_longformer", "--child", spec],
                             capture_output=True, text=True, timeout=timeout)
        return float(res.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return math.nan


def compare(points: List[Point], repeats: int = 3, memory: Optional[str] = "child",
            threads: Optional[int] = None) -> List[dict]:
    """One row per (T, impl): time ms, peak MB, ratio to Longformer's own, max err of ours.

    ``memory``: "child" (a fresh process per call: clean but slow), "here" (this process's RSS
    high-water mark or the CUDA counters: fast, noisier) or None (not measured).
    """
    threads = threads or torch.get_num_threads()
    rows = []
    for p in points:
        theirs, ours, inputs = make_pair(p)
        fns = {"longformer": call(theirs, inputs, p.backward), "ours": call(ours, inputs, p.backward)}
        ms, outs = time_side_by_side(fns, device=p.device, repeats=repeats, warmup=1)
        real = ~inputs["is_index_masked"]                                 # (B, T) rows that count
        err = (outs["ours"] - outs["longformer"])[real].abs().max().item()
        for impl in IMPLS:
            if memory == "child" and not p.device.startswith("cuda"):
                mb = measure_memory_child(impl, p, threads)
            elif memory is not None:
                mb = peak_mem_here(fns[impl], p.device, warmup=1)
            else:
                mb = math.nan
            rows.append({"T": p.T, "impl": impl, "backend": p.backend if impl == "ours" else "longformer",
                         "time_ms": ms[impl], "peak_mem_mb": mb, "max_err": err if impl == "ours" else 0.0})
        base = {r["T"]: r for r in rows if r["impl"] == "longformer"}
        for r in rows:
            b = base[r["T"]]
            r["time_ratio"] = r["time_ms"] / b["time_ms"]
            r["mem_ratio"] = r["peak_mem_mb"] / b["peak_mem_mb"] if b["peak_mem_mb"] > 0 else math.nan
    return rows


def format_rows(rows: List[dict]) -> str:
    """The printed table; ratios are ours / Longformer's (below 1: ours is faster or smaller)."""
    head = f"{'impl':<12}{'backend':<12}{'T':>7}{'time ms':>11}{'peak MB':>10}{'time x':>8}{'mem x':>8}{'max err':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['impl']:<12}{r['backend']:<12}{r['T']:>7}{r['time_ms']:>11.1f}{r['peak_mem_mb']:>10.1f}"
                     f"{r['time_ratio']:>8.2f}{r['mem_ratio']:>8.2f}{r['max_err']:>10.1e}")
    return "\n".join(lines)


def _child(spec: str) -> int:
    d = json.loads(spec)
    torch.set_num_threads(d["threads"])
    p = Point(**d["point"])
    theirs, ours, inputs = make_pair(p)
    fn = call(theirs if d["impl"] == "longformer" else ours, inputs, p.backward)
    print(peak_mem_here(fn, p.device, warmup=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, nargs="+", default=[4096, 16384], help="sequence lengths")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--attention-window", type=int, default=512, help="Longformer's total width 2w")
    ap.add_argument("--globals", type=int, default=2, help="global tokens: [CLS] at 0, the others spread")
    ap.add_argument("--backend", default="auto", help="our hybrid backend: auto | blocked | flex | triton")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--memory", choices=("child", "here", "none"), default="child")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    if args.threads:
        torch.set_num_threads(args.threads)
    points = [Point(T=T, B=args.batch, dim=args.dim, heads=args.heads, attention_window=args.attention_window,
                    G=args.globals, backend=args.backend, device=args.device, backward=args.backward)
              for T in args.T]
    rows = compare(points, repeats=args.repeats, memory=None if args.memory == "none" else args.memory,
                   threads=args.threads)
    print(format_rows(rows))
    print(f"\n{'forward + backward' if args.backward else 'forward, no_grad'}, float32, B={args.batch}, "
          f"dim={args.dim}, heads={args.heads}, attention_window={args.attention_window}, G={args.globals}, "
          f"device={args.device}, {torch.get_num_threads()} threads; ratios are ours / Longformer's")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
