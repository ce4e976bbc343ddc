"""Pictures of attention masks and attention maps.

Every function returns a :class:`matplotlib.figure.Figure`. Figures are built without pyplot
(``Figure()``), so in a notebook a figure appears once, when it is the last value of a cell,
and nothing is left open behind it. Pass ``ax=`` to draw into an axes you already have
(then the figure of that axes is returned).

Conventions: rows are queries ``i``, columns are keys ``j``; an allowed pair is a filled cell;
global tokens (``global_mask``) are outlined as a band across their row and their column.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from ..masks import create_mask

__all__ = ["as_mask_array", "plot_mask", "plot_masks_grid", "plot_attention_map"]

MaskLike = Union[Tensor, np.ndarray, Callable]
BLOCKED_COLOR = "#e2e2e2"
MASK_CMAP = ListedColormap([BLOCKED_COLOR, "#2b6cb0"])   # 0 = blocked, 1 = allowed
GLOBAL_COLOR = "#dd6b20"


def as_mask_array(mask: MaskLike, T: Optional[int] = None, name: str = "mask") -> np.ndarray:
    """Turn a mask into a (T, T) bool NumPy array.

    ``mask``: bool tensor/array of shape (T, T) or (1, T, T), or a mask_mod predicate
    ``(batch, head, q_idx, kv_idx) -> bool`` evaluated on batch element 0 (then ``T`` is required).
    """
    if callable(mask) and not isinstance(mask, (Tensor, np.ndarray)):
        if T is None:
            raise ValueError(f"{name} is a mask_mod predicate, so T must be given (got T=None)")
        mask = create_mask(mask, 1, int(T))[0]                 # (T, T)
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a bool tensor/array or a mask_mod, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be bool, got dtype {mask.dtype} (shape {mask.shape})")
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]                                         # (T, T)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"{name} must have shape (T, T) or (1, T, T), got {mask.shape}")
    if T is not None and mask.shape[0] != T:
        raise ValueError(f"{name} has T={mask.shape[0]} but T={T} was given")
    return mask


def _global_positions(global_mask, T: int) -> np.ndarray:
    """Indices of global tokens from a (T,) / (1, T) bool mask or a list of positions."""
    if global_mask is None:
        return np.zeros(0, dtype=int)
    g = global_mask.detach().cpu().numpy() if isinstance(global_mask, Tensor) else np.asarray(global_mask)
    if g.size == 0 and g.dtype != np.bool_:                    # an empty list of positions
        return np.zeros(0, dtype=int)
    if g.dtype == np.bool_:
        if g.ndim == 2 and g.shape[0] == 1:
            g = g[0]
        if g.shape != (T,):
            raise ValueError(f"global_mask must be bool of shape (T={T},) or (1, T), got {g.shape}")
        return np.flatnonzero(g)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer) or ((g < 0) | (g >= T)).any():
        raise ValueError(f"global_mask as positions must be ints in [0, {T}), got {g.tolist()}")
    return g


def _new_axes(ax: Optional[Axes], size: float) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=(size, size), layout="constrained").add_subplot()


def _cell_grid(ax: Axes, T: int) -> None:
    """Thin lines between cells when they are big enough to see, and integer ticks."""
    step = max(1, int(math.ceil(T / 8)))
    ax.set_xticks(range(0, T, step))
    ax.set_yticks(range(0, T, step))
    if T <= 40:
        ax.set_xticks(np.arange(-0.5, T, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, T, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)


def _highlight_globals(ax: Axes, positions: np.ndarray) -> None:
    for g in positions:
        ax.axhspan(g - 0.5, g + 0.5, fill=False, edgecolor=GLOBAL_COLOR, linewidth=1.5)
        ax.axvspan(g - 0.5, g + 0.5, fill=False, edgecolor=GLOBAL_COLOR, linewidth=1.5)


def plot_mask(mask: MaskLike, T: Optional[int] = None, *, title: Optional[str] = None,
              global_mask=None, show_count: bool = True, ax: Optional[Axes] = None,
              size: float = 3.6) -> Figure:
    """Draw one (T, T) bool mask: query i on rows, key j on columns, allowed = filled.

    ``mask``: see :func:`as_mask_array` (a mask_mod also needs ``T``; its ``__name__`` is the
    default title). ``global_mask``: (T,) bool or a list of positions, outlined as row and
    column bands. ``show_count`` appends the number of allowed pairs to the title.
    The image data (``ax.images[0].get_array()``) is the mask as 0/1.
    """
    m = as_mask_array(mask, T)
    if title is None:
        title = getattr(mask, "__name__", "mask") if callable(mask) else "mask"
    ax = _new_axes(ax, size)
    n = m.shape[0]
    ax.imshow(m.astype(np.uint8), cmap=MASK_CMAP, vmin=0, vmax=1, interpolation="nearest")
    _cell_grid(ax, n)
    _highlight_globals(ax, _global_positions(global_mask, n))
    if show_count:
        title = f"{title}\n{int(m.sum())} / {n * n} pairs ({m.mean():.0%})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    return ax.figure


def plot_masks_grid(masks: Mapping[str, MaskLike], T: Optional[int] = None, *, ncols: int = 4,
                    global_mask=None, size: float = 2.6) -> Figure:
    """Several masks side by side, one axes each, titled ``name`` + allowed-pair count.

    ``masks``: ordered mapping name -> mask (anything :func:`plot_mask` takes). Unused cells of
    the last row are hidden. ``global_mask`` (optional) is outlined on every panel.
    """
    if not isinstance(masks, Mapping) or len(masks) == 0:
        raise ValueError("masks must be a non-empty mapping name -> mask")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, len(masks))
    nrows = math.ceil(len(masks) / ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, mask) in zip(axes, masks.items()):
        plot_mask(mask, T, title=name, global_mask=global_mask, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in axes[len(masks):]:
        fig.delaxes(ax)
    fig.supxlabel("key j", fontsize=9)
    fig.supylabel("query i", fontsize=9)
    return fig


def plot_attention_map(weights: Union[Tensor, np.ndarray], *, mask: Optional[MaskLike] = None,
                       title: str = "attention weights", ax: Optional[Axes] = None,
                       colorbar: bool = True, cmap: str = "viridis", size: float = 4.0,
                       label: str = "probability") -> Figure:
    """Heat map of attention probabilities, weights (T, T) (pick ``[b, h]`` of a (B, H, T, T)).

    With ``mask`` (T, T) bool, pairs that are not allowed are drawn grey (a masked array), so a
    learner can tell "allowed but tiny" from "never allowed". ``cmap`` names a matplotlib colormap;
    ``label`` is the colour bar's (an error map: ``label="|difference|", cmap="Reds"``).
    """
    if isinstance(weights, Tensor):
        weights = weights.detach().float().cpu().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must have shape (T, T) (index [b, h] first), got {w.shape}")
    data = w if mask is None else np.ma.masked_array(w, mask=~as_mask_array(mask, w.shape[0]))
    ax = _new_axes(ax, size)
    im = ax.imshow(data, cmap=colormaps[cmap].with_extremes(bad=BLOCKED_COLOR), vmin=0.0,
                   vmax=max(float(w.max()), 1e-12), interpolation="nearest")
    _cell_grid(ax, w.shape[0])
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    return ax.figure
