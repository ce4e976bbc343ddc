"""Pictures for notebook 08: who needs which keys, and what each way of sharing K/V costs.

Both functions return a :class:`matplotlib.figure.Figure` built without pyplot, like
:mod:`tutor.viz`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..masks import hybrid_mask
from .sharding import shard_bounds
from .halo import halo_rows
from .traffic import all_gather_rows, layer_bytes

__all__ = ["plot_shard_halos", "plot_traffic"]

#: 0 not allowed, 1 key on the query's own rank, 2 key from the halo, 3 a global key from farther away,
#: 4 a global row's key on another rank (merged by all-reduce)
KINDS = ("not allowed", "own shard", "halo (from a neighbour)", "global key (all-gathered)",
         "global row, other ranks' keys (merged)")
CMAP = ListedColormap(["#f2f2f2", "#2b6cb0", "#dd6b20", "#6b46c1", "#38a169"])


def key_sources(T: int, world_size: int, window: int, global_positions: Sequence[int] = (),
                causal: bool = False) -> np.ndarray:
    """(T, T) int array: for each allowed (query i, key j), where key j comes from (see ``KINDS``)."""
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, list(global_positions)] = True
    allowed = hybrid_mask(T, window, gm, causal=causal)[0].numpy()                 # (T, T)
    owner = np.zeros(T, dtype=int)
    for r, (s, e) in enumerate(shard_bounds(T, world_size)):
        owner[s:e] = r
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    same = owner[:, None] == owner[None, :]                                        # (T, T)
    near = np.abs(i - j) <= window
    is_g = gm[0].numpy()
    kind = np.where(same, 1, np.where(near, 2, 3))
    kind = np.where(is_g[:, None] & ~same & ~near, 4, kind)                        # global rows
    return np.where(allowed, kind, 0)


def plot_shard_halos(T: int, world_size: int, window: int, global_positions: Sequence[int] = (),
                     causal: bool = False) -> Figure:
    """The (T, T) hybrid mask, rows cut into the ranks' shards, each allowed key coloured by its source."""
    kinds = key_sources(T, world_size, window, global_positions, causal)
    fig = Figure(figsize=(6.4, 5.0))
    ax = fig.add_subplot()
    ax.imshow(kinds, cmap=CMAP, vmin=0, vmax=len(KINDS) - 1, interpolation="nearest")
    for r, (s, e) in enumerate(shard_bounds(T, world_size)):
        if s > 0:
            ax.axhline(s - 0.5, color="black", lw=1.2)
            ax.axvline(s - 0.5, color="black", lw=0.5, ls=":")
        ax.text(T - 0.5 + 0.5, (s + e - 1) / 2, f" rank {r}", va="center", ha="left", fontsize=8)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(f"T={T}, P={world_size}, w={window}" + (", causal" if causal else ""), fontsize=10)
    present = sorted(set(np.unique(kinds).tolist()) - {0})
    ax.legend(handles=[Patch(color=CMAP.colors[k], label=KINDS[k]) for k in present], loc="upper center",
              bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.25, right=0.85)
    return fig


def plot_traffic(Ts: Sequence[int], world_sizes: Sequence[int], window: int, B: int = 1, H: int = 16,
                 Dh: int = 64, bytes_per_value: int = 2) -> Figure:
    """Bytes of K and V the busiest rank sends per layer, against T: halo vs all-gather / ring."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    Ts = list(Ts)
    for n, P in enumerate(world_sizes):
        color = f"C{n}"
        halo = [layer_bytes(halo_rows(T, P, window), B, H, Dh, bytes_per_value) for T in Ts]
        gather = [layer_bytes(all_gather_rows(T, P), B, H, Dh, bytes_per_value) for T in Ts]
        ax.loglog(Ts, gather, color=color, ls="--", label=f"all-gather / ring, P={P}")
        ax.loglog(Ts, halo, color=color, marker="o", ms=3, label=f"halo, P={P}")
    ax.set_xlabel("T (sequence length)")
    ax.set_ylabel("bytes sent per rank per layer")
    ax.set_title(f"K and V traffic, w={window}, B={B}, H={H}, Dh={Dh}, {8 * bytes_per_value}-bit", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig
