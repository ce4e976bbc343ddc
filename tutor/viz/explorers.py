"""The figures behind :mod:`tutor.widgets`: an attention row beside its map, and predicted costs vs T.

Plotting only: each function takes plain numbers or tensors and returns a
:class:`~matplotlib.figure.Figure` (built without pyplot), so tests can call it directly. The
numbers come from elsewhere: costs from :func:`tutor.costs.attention_cost`, measurements from
:func:`tutor.bench.load_benchmarks`, masks from :mod:`tutor.masks`.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from torch import Tensor

from ..costs import IMPLS, attention_cost
from ..masks import global_mask_at, hybrid_mask
from .masks import GLOBAL_COLOR, plot_attention_map

__all__ = ["plot_attention_explorer", "plot_costs", "IMPL_COLORS"]

IMPL_COLORS = {"dense": "#c53030", "unfold": "#2b6cb0", "hybrid": "#2f855a"}


def plot_attention_explorer(weights, query: int, window: int, global_positions: Sequence[int] = (),
                            *, causal: bool = False, title: str = "") -> Figure:
    """Left: the attention row of ``query`` as bars (global keys orange); right: the (T, T) map.

    ``weights``: (T, T) probabilities of one head. On the map, global rows (they *collect* from
    every key) and global columns (they *broadcast* to every query) are outlined, the query row
    is boxed. The bar heights (``fig.axes[0].patches``) are exactly ``weights[query]``.
    """
    w = weights.detach().float().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights)
    T = w.shape[0]
    allowed = hybrid_mask(T, window, global_mask_at(T, global_positions), causal=causal)[0].numpy()  # (T, T)
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

    ``measured`` rows (see :func:`tutor.bench.load_benchmarks`) with this window, G, B, H and Dh are overlaid:
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
