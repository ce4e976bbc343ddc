"""Pictures for the GPU-grade hybrid (notebook 04): query blocks, tiles, benchmark curves.

* :func:`plot_query_blocks` - the hybrid mask with each query block's key span outlined: the
  rectangles are exactly what the ``blocked`` backend scores (everything outside is skipped).
* :func:`plot_tile_states` - a FlexAttention BlockMask as a grid of tiles: empty (skipped),
  partial (``mask_mod`` evaluated per element) and full (no mask needed).
* :func:`plot_roofline` - the roofline of a device and where kernels of given arithmetic
  intensity (FLOPs per byte moved) land on it.
* :func:`plot_benchmark` - log-log time and peak memory against T from ``tutor.bench`` rows.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..arguments import check_flag, check_int, check_window
from ..costs import key_span
from ..masks import global_mask_at, hybrid_mask
from .masks import plot_mask
from .scaling import plot_scaling

__all__ = ["plot_query_blocks", "plot_tile_states", "plot_roofline", "plot_benchmark", "TILE_CMAP"]

SPAN_COLOR = "#c53030"
TILE_CMAP = ListedColormap(["#f0f0f0", "#90cdf4", "#2b6cb0"])           # empty, partial, full


def plot_query_blocks(T: int, window: int, block: int, global_positions: Sequence[int] = (), *,
                      causal: bool = False, ax: Optional[Axes] = None, size: float = 4.2) -> Figure:
    """The hybrid mask of one sequence with what each query block scores outlined.

    Query block ``n`` (rows ``n*b .. n*b+b-1``) needs keys ``n*b - w .. n*b + b - 1 + w``
    (dashed; ``.. n*b + b - 1`` when causal). The ``blocked`` backend scores whole key blocks
    ``n - n_side .. n + n_side``, ``n_side = ceil(w / b)`` (solid), clipped to the sequence: with ``b = w`` the
    two coincide. Global keys are extra columns of every block; global rows a separate pass.
    """
    T, block, window = check_int("T", T, 1), check_int("block", block, 1), check_window(window)
    causal = check_flag("causal", causal)
    gm = global_mask_at(T, global_positions)                               # (1, T)
    mask = hybrid_mask(T, window, gm, causal=causal)                       # (1, T, T)
    n_side, span = key_span(window, block, causal)                         # the backend's own formula
    ns = span // block
    fig = plot_mask(mask, global_mask=gm[0], ax=ax, size=size,
                    title=f"b={block}, w={window}: {ns} key blocks = {span} keys per query block")
    ax = fig.axes[0] if ax is None else ax
    for n in range(math.ceil(T / block)):
        r0, r1 = n * block, min(T, (n + 1) * block)
        for c0, c1, style in ((n * block - window, (n + 1) * block + (0 if causal else window), "--"),
                              ((n - n_side) * block, (n - n_side + ns) * block, "-")):
            c0, c1 = max(0, c0), min(T, c1)
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, linestyle=style,
                                   edgecolor=SPAN_COLOR, linewidth=1.6 if style == "-" else 1.0))
    return fig


def plot_tile_states(states, *, title: Optional[str] = None, block: int = 128,
                     ax: Optional[Axes] = None, size: float = 3.6) -> Figure:
    """A grid of tiles coloured by state: 0 empty (skipped), 1 partial (masked), 2 full.

    ``states``: (n_q_tiles, n_kv_tiles) ints, e.g. from :func:`tutor.attention.tiles.tile_states`.
    The title reports how many tiles are computed at all, the fraction a kernel cannot skip.
    """
    a = np.asarray(states.cpu() if isinstance(states, torch.Tensor) else states)
    if a.ndim != 2 or a.size == 0 or not np.isin(a, (0, 1, 2)).all():
        raise ValueError(f"states must be a non-empty 2-D array of 0/1/2, got shape {a.shape}")
    if ax is None:
        ax = Figure(figsize=(size, size), layout="constrained").add_subplot()
    ax.imshow(a, cmap=TILE_CMAP, vmin=0, vmax=2, interpolation="nearest")
    busy = int((a > 0).sum())
    ax.set_title(title or f"{busy} of {a.size} tiles computed ({100 * busy / a.size:.0f}%)", fontsize=10)
    ax.set_xlabel(f"key tile ({block} keys)")
    ax.set_ylabel(f"query tile ({block} queries)")
    ax.legend(handles=[Patch(color=TILE_CMAP(i), label=lab) for i, lab in enumerate(("empty", "partial", "full"))],
              fontsize=7, loc="upper right", framealpha=0.9)
    return ax.figure


def plot_roofline(peak_tflops: float, bandwidth_gbs: float, points: Mapping[str, float], *,
                  title: Optional[str] = None, ax: Optional[Axes] = None, size=(5.4, 3.6)) -> Figure:
    """Attainable TFLOP/s = min(peak, intensity x bandwidth), log-log, with labelled kernels.

    ``points``: label -> arithmetic intensity in FLOPs per byte of memory traffic. Left of the
    ridge (``peak / bandwidth``) a kernel is memory-bound, right of it compute-bound.
    """
    if peak_tflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"peak_tflops and bandwidth_gbs must be > 0, got {peak_tflops}, {bandwidth_gbs}")
    if not points or any(not (x > 0) for x in points.values()):
        raise ValueError("points must map labels to positive intensities (FLOP/byte)")
    ridge = peak_tflops * 1e3 / bandwidth_gbs                               # FLOP/byte
    lo = min(min(points.values()), ridge) / 4
    hi = max(max(points.values()), ridge) * 4
    x = np.geomspace(lo, hi, 200)
    roof = np.minimum(peak_tflops, x * bandwidth_gbs / 1e3)                # TFLOP/s
    if ax is None:
        ax = Figure(figsize=size, layout="constrained").add_subplot()
    ax.plot(x, roof, color="black", linewidth=1.8, label="roofline")
    ax.axvline(ridge, color="grey", linestyle=":", linewidth=1)
    for n, (label, xi) in enumerate(points.items()):
        yi = min(peak_tflops, xi * bandwidth_gbs / 1e3)
        ax.plot([xi], [yi], marker="o", markersize=7, linestyle="", color=f"C{n}",
                label=f"{label}: {xi:.3g} FLOP/B -> {yi:.3g} TFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("attainable TFLOP/s")
    ax.set_title(title or f"roofline: {peak_tflops:g} TFLOP/s, {bandwidth_gbs:g} GB/s (ridge {ridge:.0f} FLOP/B)",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def _series(rows: Iterable[Mapping], metric: str, T_values: Sequence[int]):
    series = {}
    for r in rows:
        label = r["impl"] if r["backend"] in ("", "sdpa", "python", "torch") else f"{r['impl']}:{r['backend']}"
        val = float(r[metric]) if r[metric] not in ("", None) else math.nan
        series.setdefault(label, {})[int(r["T"])] = val if val > 0 else math.nan
    return {label: [pts.get(T, math.nan) for T in T_values] for label, pts in series.items()}


def plot_benchmark(rows: Iterable[Mapping], *, title: Optional[str] = None, size=(9.6, 3.6)) -> Figure:
    """Time and peak memory against T, log-log, one line per implementation.

    ``rows``: dicts (or CSV rows) with the columns of ``tutor.bench.COLUMNS``. Missing points
    (a run skipped because it would not fit) are gaps. Grey guides show slopes 1 and 2.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows must hold at least one benchmark row")
    T_values = sorted({int(r["T"]) for r in rows})
    fig = Figure(figsize=size, layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    times = _series(rows, "time_ms", T_values)
    plot_scaling(T_values, times, ylabel="time per call (ms)", ax=ax_t, anchor=-1,
                 guides=(1, 2) if len(T_values) > 1 else ())
    mems = _series(rows, "peak_mem_mb", T_values)
    if any(np.isfinite(v).any() for v in mems.values()):
        plot_scaling(T_values, mems, ylabel="peak extra memory (MB)", ax=ax_m, anchor=-1)
    else:
        ax_m.text(0.5, 0.5, "memory not measured", ha="center", va="center", transform=ax_m.transAxes)
        ax_m.set_axis_off()
    r0 = {k: f"{v:g}" if isinstance(v, float) else v for k, v in rows[0].items()}   # 4.0 -> "4"
    fig.suptitle(title or f"{r0['device']} {r0['dtype']}: B={r0['B']} H={r0['H']} Dh={r0['Dh']} "
                 f"w={r0['window']} G={r0['G']}", fontsize=10)
    return fig
