"""The pure functions behind :mod:`tutor.widgets`: pattern masks, cost formulas, figures.

Nothing here knows about widgets. Each function takes plain numbers and returns a tensor, a
dict or a :class:`~matplotlib.figure.Figure` (built without pyplot), so tests can call it directly.

* Patterns: local / causal / global come from :mod:`tutor.masks`; the dilated, random and
  block patterns are small seeded mask mods here (``explorer_*_mod``), to be swapped for the
  official factories once :mod:`tutor.masks` has them.
* Costs: :func:`attention_cost` predicts FLOPs and memory of dense, unfold and hybrid attention.
* Measurements: :func:`load_benchmarks` reads ``docs/benchmarks/*.csv`` (absent files: no rows).
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from torch import Tensor

from ..attention import HybridSparseAttention
from ..attention.blocked import CHUNK_ELEMENTS, default_block_size
from ..masks import (MaskMod, and_masks, create_mask, generate_causal, generate_global,
                     generate_local_window, hybrid_mask, or_masks)
from .unfold import format_bytes  # noqa: F401  (re-exported for the widgets)
from .masks import GLOBAL_COLOR, plot_attention_map

__all__ = ["parse_positions", "global_flags", "explorer_dilated_mod", "explorer_random_mod",
           "explorer_block_mod", "pattern_mask", "local_pair_count", "IMPLS", "attention_cost", "load_benchmarks",
           "toy_attention_weights", "plot_attention_explorer", "plot_costs", "format_bytes"]

IMPLS = ("dense", "unfold", "hybrid")
IMPL_COLORS = {"dense": "#c53030", "unfold": "#2b6cb0", "hybrid": "#2f855a"}
BENCH_DIR = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
BENCH_SHAPE = ("B", "H", "T", "Dh", "window", "G")                   # required in every row
BENCH_RESULTS = ("time_ms", "peak_mem_mb", "speedup_vs_dense", "max_err")  # empty -> NaN


def parse_positions(text: str, T: int) -> Tuple[int, ...]:
    """Token positions typed as ``"0, 17"``, ranges ``"0-3"``, ``"all"`` or ``""`` -> sorted tuple."""
    if not isinstance(text, str):
        raise TypeError(f"positions must be a str like '0, 17', got {type(text).__name__}")
    if text.strip().lower() == "all":
        return tuple(range(T))
    found = set()
    for part in filter(None, re.split(r"[,\s]+", text.strip())):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"positions: {part!r} is not a position or a range a-b (text {text!r})")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi >= T or lo > hi:
            raise ValueError(f"positions: {part!r} is outside 0..{T - 1} (T={T})")
        found.update(range(lo, hi + 1))
    return tuple(sorted(found))


def global_flags(T: int, positions: Sequence[int]) -> Tensor:
    """Token positions -> the (1, T) bool ``global_mask`` that :mod:`tutor.masks` expects."""
    bad = [p for p in positions if not 0 <= int(p) < T]
    if bad:
        raise ValueError(f"global_positions must lie in 0..{T - 1}, got {bad} (T={T})")
    g = torch.zeros(1, T, dtype=torch.bool)
    g[0, [int(p) for p in positions]] = True                                 # (1, T)
    return g


def explorer_dilated_mod(window: int, dilation: int) -> MaskMod:
    """Dilated window: ``|i - j| <= w * d`` and ``d`` divides ``i - j`` (2w+1 keys spread d apart)."""
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if dilation == 1:
        return generate_local_window(window)

    def dilated(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= window * dilation) & (d % dilation == 0)
    dilated.__name__ = f"dilated_w{window}_d{dilation}"
    return dilated


def explorer_random_mod(T: int, num_random: int, seed: int = 0) -> MaskMod:
    """BigBird-style random keys: each query reads ``r`` keys drawn (seeded) from all T positions."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.rand(T, T, generator=gen).argsort(dim=1)[:, :min(num_random, T)]  # (T, r)
    table = torch.zeros(T, T, dtype=torch.bool).scatter_(1, picks, True)          # (T, T)

    def random_keys(b, h, q_idx, kv_idx):
        return table[q_idx, kv_idx]
    random_keys.__name__ = f"random_r{num_random}_s{seed}"
    return random_keys


def explorer_block_mod(block: int) -> MaskMod:
    """Block-diagonal: queries and keys in the same block of ``block`` tokens see each other."""
    def same_block(b, h, q_idx, kv_idx):
        return q_idx // block == kv_idx // block
    same_block.__name__ = f"block_{block}"
    return same_block


def pattern_mask(T: int, window: int, global_positions: Sequence[int] = (), *, causal: bool = False,
                 dilation: int = 1, num_random: int = 0, seed: int = 0, block: int = 0) -> Tensor:
    """``(local_or_dilated | block | random | global) & causal`` as a bool (T, T) mask.

    ``num_random=0`` and ``block=0`` switch those patterns off; with ``dilation=1`` and both off
    this equals ``tutor.masks.hybrid_mask(T, window, global_mask, causal=causal)[0]``.
    """
    for name, val, low in (("T", T, 1), ("window", window, 0), ("num_random", num_random, 0),
                           ("block", block, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    mods = [explorer_dilated_mod(window, dilation)]
    if block > 0:
        mods.append(explorer_block_mod(block))
    if num_random > 0:
        mods.append(explorer_random_mod(T, num_random, seed))
    if len(global_positions):
        mods.append(generate_global(global_flags(T, global_positions)))
    mod = or_masks(*mods)
    if causal:
        mod = and_masks(mod, generate_causal())
    return create_mask(mod, 1, T)[0]                                          # (T, T)


def local_pair_count(T: int, window: int, causal: bool = False) -> int:
    """Closed form of the number of pairs with ``|i - j| <= w`` (or ``0 <= i - j <= w``)."""
    w = min(window, T - 1)                  # a window wider than the sequence adds nothing
    return T * (w + 1) - w * (w + 1) // 2 if causal else T * (2 * w + 1) - w * (w + 1)


def attention_cost(impl: str, T: int, window: int, G: int = 0, *, B: int = 1, H: int = 1,
                   Dh: int = 64, causal: bool = False, bytes_per_element: int = 4) -> Dict[str, float]:
    """Predicted ``{"flops", "memory_bytes"}`` of one CPU forward pass of ``impl`` in IMPLS.

    FLOPs count the two matmuls (scores, then weights @ V: 2 FLOPs per multiply-add each):
    dense ``4BHT^2 Dh``; unfold ``4BH Dh (T(2w+1+G) + GT)``; hybrid ``4BH Dh (T'(L+G) + GT)``
    with the query block ``b`` of ``default_block_size``, ``T' = ceil(T/b) b`` and key span
    ``L = b + 2w`` (``b + w`` causal). The ``GT`` term is the dense pass of the global rows.
    Memory (elements x ``bytes_per_element``) is q, k, v, out (``4BHT Dh``) plus the largest
    intermediates: dense the (B, H, T, T) scores; unfold the K and V windows ``2BHT(2w+1)Dh``
    and ``BHT(2w+1+G)`` scores; hybrid one chunk of n blocks (n capped by ``CHUNK_ELEMENTS``):
    ``BHn b(L+G)`` scores and ``2BHn(L+G)Dh`` K/V spans; unfold and hybrid also the ``BHGT``
    global rows.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    for name, val in (("T", T), ("B", B), ("H", H), ("Dh", Dh)):
        if val < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if window < 0 or G < 0 or G > T:
        raise ValueError(f"need window >= 0 and 0 <= G <= T, got window={window}, G={G}, T={T}")
    BH, io = B * H, 4 * B * H * T * Dh
    if impl == "dense":
        macs, elems = BH * T * T * Dh, BH * T * T
    elif impl == "unfold":
        macs = BH * Dh * (T * (2 * window + 1 + G) + G * T)
        elems = 2 * BH * T * (2 * window + 1) * Dh + BH * T * (2 * window + 1 + G) + BH * G * T
    else:
        b = default_block_size(window, T)
        L, nb = b + window if causal else b + 2 * window, math.ceil(T / b)
        n = min(nb, max(1, CHUNK_ELEMENTS // (BH * b * (L + G))))            # blocks per chunk
        macs = BH * Dh * (nb * b * (L + G) + G * T)
        elems = BH * n * (b + 2 * Dh) * (L + G) + BH * G * T
    return {"flops": 4.0 * macs, "memory_bytes": float((io + elems) * bytes_per_element)}


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def load_benchmarks(paths: Optional[Iterable] = None) -> List[dict]:
    """Rows of the benchmark CSVs (default ``docs/benchmarks/*.csv``), numbers as floats.

    Missing or unreadable files and rows without a numeric shape (B, H, T, Dh, window, G) are
    skipped, so the result is ``[]`` when nothing has been measured yet; an empty or invalid
    result (``time_ms``, ``peak_mem_mb``, ...) becomes NaN.
    """
    files = sorted(BENCH_DIR.glob("*.csv")) if paths is None else [Path(p) for p in paths]
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


def toy_attention_weights(T: int, window: int, global_positions: Sequence[int] = (), *,
                          impl: str = "hybrid", causal: bool = False, dim: int = 32,
                          num_heads: int = 4, seed: int = 0) -> Tensor:
    """A seeded toy sequence x (1, T, dim) through a seeded ``HybridSparseAttention``.

    Returns the attention probabilities (H, T, T) of batch element 0. The global RNG is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = HybridSparseAttention(dim, num_heads, window, impl=impl, causal=causal).eval()
        x = torch.randn(1, T, dim)                                            # (1, T, dim)
    g = global_flags(T, global_positions)                                     # (1, T)
    with torch.no_grad():
        _, weights = layer(x, global_mask=g, return_weights=True)             # (1, H, T, T)
    return weights[0]                                                         # (H, T, T)


def plot_attention_explorer(weights, query: int, window: int, global_positions: Sequence[int] = (),
                            *, causal: bool = False, title: str = "") -> Figure:
    """Left: the attention row of ``query`` as bars (global keys orange); right: the (T, T) map.

    ``weights``: (T, T) probabilities of one head. On the map, global rows (they *collect* from
    every key) and global columns (they *broadcast* to every query) are outlined, the query row
    is boxed. The bar heights (``fig.axes[0].patches``) are exactly ``weights[query]``.
    """
    w = weights.detach().float().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights)
    T = w.shape[0]
    allowed = hybrid_mask(T, window, global_flags(T, global_positions), causal=causal)[0].numpy()  # (T, T)
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_row, ax_map = fig.subplots(1, 2)
    colors = [GLOBAL_COLOR if j in global_positions else ("#2b6cb0" if allowed[query, j] else "#bbbbbb")
              for j in range(T)]
    ax_row.bar(np.arange(T), w[query], color=colors, width=0.8)
    role = f"global: reads all {int(allowed[query].sum())} keys" if query in global_positions \
        else f"reads {int(allowed[query].sum())} keys"
    ax_row.set_title(f"row of query {query} ({role})", fontsize=9)
    ax_row.set_xlabel("key j")
    ax_row.set_ylabel("probability")
    ax_row.set_xlim(-0.6, T - 0.4)
    ax_row.set_ylim(0, max(float(w[query].max()), 1e-6) * 1.1)
    plot_attention_map(w, mask=allowed, title=title or "attention map (rows = queries)", ax=ax_map,
                       colorbar=False)
    for p in global_positions:
        ax_map.axhspan(p - 0.5, p + 0.5, fill=False, edgecolor=GLOBAL_COLOR, linewidth=1.5)
        ax_map.axvspan(p - 0.5, p + 0.5, fill=False, edgecolor=GLOBAL_COLOR, linewidth=1.5, linestyle="--")
    ax_map.axhspan(query - 0.5, query + 0.5, fill=False, edgecolor="red", linewidth=2.0)
    return fig


def _short_exp(v: float, _pos=None) -> str:
    """Tick label ``1e+05 -> '1e5'`` (plain text: mathtext labels are slow to draw)."""
    return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")


def plot_costs(T: int, window: int, G: int = 0, *, B: int = 1, H: int = 1, Dh: int = 64,
               measured: Sequence[dict] = (), T_range: Tuple[int, int] = (64, 65536)) -> Figure:
    """Predicted FLOPs (left) and memory (right) vs T for IMPLS, log-log, a marker at ``T``.

    ``measured`` rows (see :func:`load_benchmarks`) with this window, G, B, H and Dh are overlaid:
    peak memory on the right, time (ms, on a second axis) on the left; o = cpu, ^ = cuda, one
    series per (impl, backend, device).
    """
    Ts = np.unique(np.geomspace(T_range[0], T_range[1], 25).astype(int))
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_f, ax_m = fig.subplots(1, 2)
    setting = dict(window=window, G=G, B=B, H=H, Dh=Dh)
    rows = [r for r in measured if r["impl"] in IMPLS and all(r[k] == v for k, v in setting.items())]
    ax_t = ax_f.twinx() if rows else None
    for impl in IMPLS:
        c = IMPL_COLORS[impl]
        pred = [attention_cost(impl, int(t), window, min(G, int(t)), B=B, H=H, Dh=Dh) for t in Ts]
        now = attention_cost(impl, T, window, min(G, T), B=B, H=H, Dh=Dh)
        ax_f.plot(Ts, [p["flops"] for p in pred], color=c, label=impl)
        ax_m.plot(Ts, [p["memory_bytes"] / 2**20 for p in pred], color=c, label=impl)
        ax_f.plot([T], [now["flops"]], "o", color=c, markersize=7)
        ax_m.plot([T], [now["memory_bytes"] / 2**20], "o", color=c, markersize=7)
        for backend, dev in sorted({(r.get("backend") or "", r.get("device") or "") for r in rows
                                    if r["impl"] == impl}):
            pts = sorted((r for r in rows if r["impl"] == impl and (r.get("backend") or "") == backend
                          and (r.get("device") or "") == dev), key=lambda r: r["T"])
            marker, name = "^" if dev.startswith("cuda") else "o", f"{impl} {backend}".strip()
            mem = [(r["T"], r["peak_mem_mb"]) for r in pts if r["peak_mem_mb"] > 0]   # NaN fails too
            tim = [(r["T"], r["time_ms"]) for r in pts if r["time_ms"] > 0]
            if mem:
                ax_m.plot(*zip(*mem), marker, color=c, mfc="none", label=f"{name} measured ({dev})")
            if tim:
                ax_t.plot(*zip(*tim), marker, color=c, mfc="none", ls=":", label=f"{name} {dev} ms")
    for ax, ylabel in ((ax_f, "predicted FLOPs"), (ax_m, "memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.minorticks_off()                          # plain labels: mathtext is slow to draw
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:g}k" if v >= 1024 else f"{v:g}"))
        ax.yaxis.set_major_formatter(FuncFormatter(_short_exp))
        ax.axvline(T, color="grey", ls="--", lw=1)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if ax_t is not None:
        ax_t.set_yscale("log")
        ax_t.minorticks_off()
        ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if ax_t.lines:
            ax_t.legend(fontsize=7, loc="lower right")
        ax_t.set_ylabel("measured time (ms)", fontsize=8)
    note = f"{len(rows)} measured points" if rows else "no measured points for this setting"
    fig.suptitle(f"window={window}, G={G}, B={B}, H={H}, Dh={Dh}: {note}", fontsize=9)
    return fig
