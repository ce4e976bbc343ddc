"""Learning curves of several training runs side by side (notebook 06).

:func:`plot_learning_curves` draws, for each named run, the training loss and the accuracy on
the training batches against the step, smoothed by a trailing moving average, with an optional
dashed line at chance level. A run is anything with ``loss`` and ``accuracy`` sequences, such as
:class:`tutor.training.History` (this module does not import it: plots sit below training).
:func:`plot_cls_attention` draws one query's attention row per layer, with the marker position.
Both return a Figure built without pyplot.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..arguments import check_int

__all__ = ["moving_average", "plot_learning_curves", "plot_cls_attention"]


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): same length as ``values``."""
    window = check_int("window", window, 1)
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    csum = np.concatenate([[0.0], np.cumsum(x)])                   # (N + 1,)
    hi = np.arange(1, len(x) + 1)                                  # (N,) end of each window
    lo = np.maximum(hi - window, 0)                                # (N,) start of each window
    return (csum[hi] - csum[lo]) / (hi - lo)


def plot_learning_curves(histories: Mapping[str, Any], *, smooth: int = 10,
                         chance: Optional[float] = None,
                         title: str = "training curves") -> Figure:
    """Loss (left) and batch accuracy (right) per step for each run in ``histories``.

    ``histories``: name -> object with equal-length ``loss`` and ``accuracy`` sequences.
    ``smooth``: moving-average window in steps (1 = raw). ``chance``: accuracy of guessing.
    """
    if not histories:
        raise ValueError("histories must name at least one run, got an empty mapping")
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, hist in histories.items():
        loss, acc = getattr(hist, "loss", None), getattr(hist, "accuracy", None)
        if loss is None or acc is None or len(loss) != len(acc) or len(loss) == 0:
            raise ValueError(f"histories[{name!r}] needs non-empty loss and accuracy of equal length")
        steps = np.arange(1, len(loss) + 1)
        line, = ax_loss.plot(steps, moving_average(loss, smooth), label=name)
        ax_acc.plot(steps, moving_average(acc, smooth), color=line.get_color(), label=name)
    if chance is not None:
        ax_acc.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="training loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy on training batches", ylim=(-0.02, 1.02))
    ax_acc.legend(loc="lower right", fontsize="small")
    suffix = f" (moving average over {smooth} steps)" if smooth > 1 else ""
    fig.suptitle(title + suffix)
    return fig


def plot_cls_attention(rows: Sequence[Sequence[float]], marker: Optional[int] = None, *,
                       title: str = "where [CLS] looks") -> Figure:
    """One attention row per layer against key position, the ``marker`` position dashed.

    ``rows``: n_layers rows of T probabilities (e.g. ``weights[b, :, 0].mean(0)`` for each layer's
    (B, H, T, T) weights: query 0 averaged over heads).
    """
    data = np.asarray(rows, dtype=float)
    if data.ndim != 2 or data.shape[1] == 0:
        raise ValueError(f"rows must be n_layers rows of T weights (2-D), got shape {data.shape}")
    if marker is not None and not 0 <= marker < data.shape[1]:
        raise ValueError(f"marker must be a position in [0, {data.shape[1]}), got {marker}")
    fig = Figure(figsize=(7.0, 2.8), layout="constrained")
    ax = fig.subplots()
    for layer, row in enumerate(data, start=1):
        ax.plot(np.arange(len(row)), row, marker=".", markersize=3, linewidth=1, label=f"layer {layer}")
    if marker is not None:
        ax.axvline(marker, color="grey", linestyle="--", linewidth=1, label=f"marker ({marker})")
    ax.set(xlabel="key position", ylabel="attention weight", title=title, ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize="small")
    return fig
