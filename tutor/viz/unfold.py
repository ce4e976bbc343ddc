"""Pictures for notebook 03: what ``unfold`` does, which score slots are masked, what it costs.

* :func:`plot_unfold` - a padded sequence cut into ``(T, 2w+1)`` windows, padded edge slots marked.
* :func:`slot_kinds` / :func:`plot_score_slots` - every column of the ``[local | global]`` softmax
  of each sequence, coloured by why it is used or masked.
* :func:`plot_memory_bars` / :func:`format_bytes` - bytes of K against bytes of the window tensor.

Every plotting function returns a matplotlib Figure built without pyplot (as in
:mod:`tutor.viz.masks`), so a notebook shows it once, when it is the last value of a cell.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from ..arguments import check_bool_mask, check_int, check_window
from ..attention.global_tokens import global_index
from ..attention.unfold import unfold_windows

__all__ = ["plot_unfold", "SLOT_KINDS", "slot_kinds", "plot_score_slots", "format_bytes",
           "plot_memory_bars"]

PAD_COLOR, REAL_COLOR = "#d9d9d9", "#cfe2f3"


def plot_unfold(T: int, window: int, highlight: Sequence[int] = (0,)) -> Figure:
    """Draw ``F.pad`` + ``unfold``: T positions padded by ``w`` on each side become (T, 2w+1) windows.

    Left: the padded sequence (T + 2w cells) on top and, below it, the window of each query ``i``
    sliding one step per row. Right: the same windows stacked into the (T, 2w+1) result, where
    slot ``r`` of row ``i`` holds position ``i - w + r``. Slots on the zero padding are grey,
    hatched and say "pad". Rows in ``highlight`` are outlined in both panels.
    """
    T, window = check_int("T", T, 1), check_window(window)
    highlight = [int(i) for i in highlight]
    if any(not 0 <= i < T for i in highlight):
        raise ValueError(f"highlight rows must lie in [0, T={T}), got {highlight}")
    W = 2 * window + 1
    grid = unfold_windows(torch.arange(T)[None], window, fill=-1)[0].numpy()  # (T, 2w+1), -1 = pad
    width = T + 2 * window
    fig = Figure(figsize=(0.42 * (width + W) + 2.0, 0.42 * (T + 1.5) + 1.8), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [width, W]}, sharey=True)

    def cell(ax, x, y, pos):
        padded = not 0 <= pos < T
        ax.add_patch(Rectangle((x, y), 1, 1, facecolor=PAD_COLOR if padded else REAL_COLOR,
                               edgecolor="white", hatch="///" if padded else None, lw=1.5))
        ax.text(x + 0.5, y + 0.5, "pad" if padded else str(pos), ha="center", va="center",
                fontsize=6 if padded else 8)

    for x in range(width):
        cell(left, x, 0, x - window)                                       # the padded sequence
    for i in range(T):
        for r in range(W):
            cell(left, i + r, i + 1.5, int(grid[i, r]))                    # sliding window
            cell(right, r, i + 1.5, int(grid[i, r]))                       # stacked result
    colors = colormaps["tab10"].colors
    for n, i in enumerate(highlight):
        c = colors[(n + 3) % 10]
        left.add_patch(Rectangle((i, 0), W, 1, fill=False, edgecolor=c, lw=2.5))
        left.add_patch(Rectangle((i, i + 1.5), W, 1, fill=False, edgecolor=c, lw=2.5))
        right.add_patch(Rectangle((0, i + 1.5), W, 1, fill=False, edgecolor=c, lw=2.5))
    left.set(xlim=(0, width), ylim=(T + 1.5, 0),
             title=f"pad w={window} zeros on each side of T={T}, slide a window of 2w+1={W}")
    left.set_yticks([0.5] + list(np.arange(T) + 2.0), ["padded"] + [f"i={i}" for i in range(T)])
    left.set_xticks(np.arange(width) + 0.5, [str(x) for x in range(width)], fontsize=7)
    left.set_xlabel("index into the padded sequence (position + w)")
    right.set(xlim=(0, W), title=f"unfold -> ({T}, {W})")
    right.set_xticks(np.arange(W) + 0.5, [str(r) for r in range(W)])
    right.set_xlabel("slot r (key i - w + r)")
    for ax in (left, right):
        ax.set_aspect("equal")
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    return fig


#: kind index -> (legend label, colour) for :func:`slot_kinds`; the indices are named below
SLOT_KINDS = (
    ("local key (scored)", "#3c78d8"),
    ("global key (scored)", "#e69138"),
    ("edge padding (masked)", "#d9d9d9"),
    ("global key in window (masked: scored once, in its global column)", "#f9cb9c"),
    ("padded global slot (masked)", "#999999"),
    ("key padding (masked)", "#ead1dc"),
    ("global row (replaced by a dense row)", "#fff2cc"),
)
LOCAL, GLOBAL, EDGE, GLOBAL_IN_WINDOW, GLOBAL_SLOT_PAD, KEY_PAD, GLOBAL_ROW = range(len(SLOT_KINDS))


def slot_kinds(window: int, global_mask: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
    """Classify every slot of the ``[local | global]`` scores: long (B, T, 2w+1+G), see SLOT_KINDS.

    ``global_mask``, ``key_padding_mask``: (B, T) bool. G is the largest number of (unpadded)
    global tokens in one sequence. Padded query rows are all "key padding".
    """
    window = check_window(window)
    if global_mask is None:
        raise TypeError("global_mask must be a bool tensor of shape (B, T), got None")
    B, T = check_bool_mask("global_mask", global_mask, None, None).shape
    key_padding_mask = check_bool_mask("key_padding_mask", key_padding_mask, B, T)
    pad = torch.zeros(B, T, dtype=torch.bool) if key_padding_mask is None else key_padding_mask.cpu()
    is_global = global_mask.cpu() & ~pad
    idx, valid = global_index(is_global)                                   # (B, G), (B, G)
    in_range = unfold_windows(torch.ones(B, T, dtype=torch.bool), window, False)  # (B, T, 2w+1)
    local = torch.full((B, T, 2 * window + 1), EDGE, dtype=torch.long)     # (B, T, 2w+1)
    local[in_range] = LOCAL
    local[in_range & unfold_windows(pad, window, True)] = KEY_PAD
    local[in_range & unfold_windows(is_global, window, False)] = GLOBAL_IN_WINDOW
    glob = torch.where(valid, GLOBAL, GLOBAL_SLOT_PAD)[:, None, :].expand(B, T, -1)  # (B, T, G)
    kinds = torch.cat([local, glob], dim=-1)                               # (B, T, 2w+1+G)
    kinds[is_global] = GLOBAL_ROW
    kinds[pad] = KEY_PAD
    return kinds


def plot_score_slots(window: int, global_mask: Tensor, key_padding_mask: Optional[Tensor] = None) -> Figure:
    """One panel per sequence: the (T, 2w+1+G) score slots of unfold attention, by kind."""
    kinds = slot_kinds(window, global_mask, key_padding_mask)             # (B, T, 2w+1+G)
    B, T, C = kinds.shape
    W = 2 * window + 1
    cmap = ListedColormap([c for _, c in SLOT_KINDS])
    fig = Figure(figsize=(1.2 + 0.32 * C * B + 0.6 * B, 2.4 + 0.2 * T), layout="constrained")
    for b, ax in enumerate(fig.subplots(1, B, squeeze=False)[0]):
        ax.imshow(kinds[b].numpy(), cmap=cmap, vmin=-0.5, vmax=len(SLOT_KINDS) - 0.5,
                  interpolation="nearest", aspect="auto")
        ax.axvline(W - 0.5, color="black", lw=2)
        ax.set_xticks(range(C), [str(r) for r in range(W)] + [f"g{g}" for g in range(C - W)], fontsize=7)
        ax.set_xticks(np.arange(C + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(T + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=0.8)
        ax.tick_params(which="minor", length=0)
        n_glob = int((kinds[b, :, 0] == GLOBAL_ROW).sum())
        ax.set(title=f"sequence {b}: {n_glob} global", xlabel="local slots | global slots",
               ylabel="query i" if b == 0 else None)
    used = sorted(set(kinds.unique().tolist()))
    fig.legend(handles=[Patch(color=SLOT_KINDS[k][1], label=SLOT_KINDS[k][0]) for k in used],
               loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    return fig


def format_bytes(n: float) -> str:
    """Human-readable size with binary prefixes: 1536 -> '1.5 KiB'."""
    if n < 0:
        raise ValueError(f"n must be a non-negative number of bytes, got {n}")
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def plot_memory_bars(labels: Sequence[str], k_bytes: Sequence[float], window_bytes: Sequence[float]) -> Figure:
    """Grouped bars (log scale): bytes of K beside bytes of its unfolded window tensor, per config.

    ``labels[n]`` names configuration n; ``k_bytes[n]``, ``window_bytes[n]``: positive byte counts.
    The ratio ``window / K`` is written above each pair.
    """
    labels = list(labels)
    k_bytes, window_bytes = np.asarray(k_bytes, float), np.asarray(window_bytes, float)
    if not (len(labels) == len(k_bytes) == len(window_bytes)) or not labels:
        raise ValueError(f"labels, k_bytes and window_bytes must have one equal, non-zero length, got "
                         f"{len(labels)}, {len(k_bytes)}, {len(window_bytes)}")
    if (k_bytes <= 0).any() or (window_bytes <= 0).any():
        raise ValueError("k_bytes and window_bytes must be positive (the axis is logarithmic)")
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(5.0, 1.6 * len(labels) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for bars, values in ((ax.bar(x - 0.2, k_bytes, 0.4, label="K  (B, H, T, Dh)", color="#3c78d8"), k_bytes),
                         (ax.bar(x + 0.2, window_bytes, 0.4, label="K windows  (B, H, T, 2w+1, Dh)",
                                 color="#cc0000"), window_bytes)):
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v * 1.15, format_bytes(v),
                    ha="center", va="bottom", fontsize=7)
    for xi, kb, wb in zip(x, k_bytes, window_bytes):
        ax.text(xi, wb * 5, f"x{wb / kb:.4g}", ha="center", va="bottom", fontsize=9, fontweight="bold")
    ax.set_yscale("log")
    ax.set_ylim(top=max(window_bytes.max(), k_bytes.max()) * 60)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="bytes (log scale)", title="the window tensor is (2w+1) times the size of K")
    ax.legend(loc="upper left", fontsize=8)
    return fig
