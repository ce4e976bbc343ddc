"""Pictures of cost against sequence length: time, memory or pair counts versus T.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (see
:mod:`tutor.viz.masks`). On log-log axes a power law ``c * T**p`` is a straight line of slope
``p``, which is the whole point: dense attention has slope 2, windowed attention slope 1.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_scaling", "loglog_slope"]


def _as_positive_1d(name: str, values, n: Optional[int] = None) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} values but T_values has {n}")
    return a


def loglog_slope(T_values: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(T): the empirical exponent p in y ~ T**p."""
    T = _as_positive_1d("T_values", T_values)
    y = _as_positive_1d("y", y, T.size)
    if T.size < 2 or (T <= 0).any() or (y <= 0).any():
        raise ValueError("loglog_slope needs at least two points, all T and y > 0")
    return float(np.polyfit(np.log(T), np.log(y), 1)[0])


def plot_scaling(T_values: Sequence[float], series: Mapping[str, Sequence[float]], *,
                 ylabel: str = "time (s)", title: Optional[str] = None, logx: bool = True,
                 logy: bool = True, guides: Sequence[float] = (), anchor: int = 0,
                 ax: Optional[Axes] = None, size: tuple = (5.0, 3.4)) -> Figure:
    """One line per series of y values measured at ``T_values`` (markers at the measurements).

    ``series``: mapping label -> values, each the same length as ``T_values``; None or NaN
    entries (a run that did not fit) are left as gaps. ``guides``: exponents p for grey
    reference lines ``y ~ T**p`` labelled ``~T^p``, passing through point ``anchor`` of the first
    series (default its first point; ``anchor=-1`` uses the last, which is steadier for timings;
    a NaN anchor moves to the nearest finite point). The axes hold
    ``len(series) + len(guides)`` lines.
    """
    T = _as_positive_1d("T_values", T_values)
    if not isinstance(series, Mapping) or len(series) == 0:
        raise ValueError("series must be a non-empty mapping label -> values")
    if isinstance(anchor, bool) or not isinstance(anchor, int) or not -T.size <= anchor < T.size:
        raise ValueError(f"anchor must be an int index into T_values (len {T.size}), got {anchor!r}")
    if ax is None:
        ax = Figure(figsize=size, layout="constrained").add_subplot()
    first = None
    for label, values in series.items():
        y = _as_positive_1d(f"series[{label!r}]",
                            [np.nan if v is None else v for v in values], T.size)
        ax.plot(T, y, marker="o", label=str(label))
        if first is None:
            first = y
    ok = np.flatnonzero(np.isfinite(first))
    for p, style in zip(guides, ["--", ":", "-.", (0, (5, 5))] * len(guides)):
        if ok.size:
            i0 = ok[np.abs(ok - (anchor % T.size)).argmin()]
            ax.plot(T, first[i0] * (T / T[i0]) ** p, linestyle=style, color="grey",
                    linewidth=1.2, label=f"~T^{p:g}")
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(T, [f"{t:g}" for t in T])                  # label the measured T values
        ax.minorticks_off()
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure
