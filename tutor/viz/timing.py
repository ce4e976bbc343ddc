"""Run times against sequence length, measured and extrapolated (notebook 02 and later).

* :func:`fit_power_law` - ``seconds ~ c * T**p``, p fitted (:func:`tutor.viz.scaling.loglog_slope`)
  or fixed by a complexity argument.
* :func:`format_seconds` - '350 µs', '4.2 s', '3.1 h', '2.5 days'.
* :func:`plot_timings` - the measured lines of :func:`tutor.viz.scaling.plot_scaling`, plus each
  fitted power law drawn dashed out to a longer T, so "how long would this take at T = 64k?"
  has a picture. Returns a Figure built without pyplot.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from .scaling import loglog_slope, plot_scaling

__all__ = ["fit_power_law", "format_seconds", "plot_timings"]


def fit_power_law(T: Sequence[float], seconds: Sequence[float],
                  exponent: Optional[float] = None) -> Tuple[float, float]:
    """Fit ``seconds = c * T**p``; returns ``(c, p)``.

    ``T`` and ``seconds``: equal-length sequences of positive numbers. Without ``exponent``, ``p``
    is the least-squares log-log slope and ``c`` the matching intercept (needs two distinct T).
    With ``exponent`` (the order a complexity argument predicts), ``p`` is fixed and ``c`` is
    anchored at the largest T, where fixed per-call overheads distort the least.
    """
    T, seconds = np.asarray(T, float), np.asarray(seconds, float)
    if T.shape != seconds.shape or T.ndim != 1 or T.size == 0:
        raise ValueError(f"T and seconds must be 1-D, non-empty and of equal length, "
                         f"got shapes {T.shape} and {seconds.shape}")
    if (T <= 0).any() or (seconds <= 0).any() or not np.isfinite(seconds).all():
        raise ValueError("T and seconds must be positive and finite (they are fitted on a log scale)")
    if exponent is not None:
        last = int(np.argmax(T))
        return float(seconds[last] / T[last] ** exponent), float(exponent)
    if len(np.unique(T)) < 2:
        raise ValueError(f"T needs at least two distinct values to fit a power law, got {T.tolist()}")
    p = loglog_slope(T, seconds)
    return float(np.exp(np.mean(np.log(seconds) - p * np.log(T)))), p


def format_seconds(s: float) -> str:
    """A duration in the unit a person would use: 3.5e-4 -> '350 µs', 7200 -> '2 h'."""
    if not s >= 0:
        raise ValueError(f"s must be a non-negative number of seconds, got {s}")
    for limit, scale, unit in ((1e-3, 1e6, "µs"), (1.0, 1e3, "ms"), (120.0, 1.0, "s"),
                               (7200.0, 1 / 60, "min"), (172800.0, 1 / 3600, "h")):
        if s < limit:
            value = s * scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{s / 86400:.3g} days"


def plot_timings(T: Sequence[int], timings: Mapping[str, Sequence[float]], *,
                 extrapolate_to: Optional[int] = None, exponents: Optional[Mapping[str, float]] = None,
                 title: str = "run time vs sequence length") -> Figure:
    """Log-log plot of measured run times, one solid line per implementation.

    ``T``: the measured sequence lengths; ``timings[name]``: seconds, one per T. With
    ``extrapolate_to``, each fitted power law (:func:`fit_power_law`) is drawn dashed, in its
    line's colour, from the first T to ``extrapolate_to``, and its value there is written at the
    end; ``exponents[name]`` fixes that line's power instead of fitting it. The axes hold
    ``len(timings)`` measured lines, then ``len(timings)`` dashed ones.
    """
    T = np.asarray(T, float)
    if not isinstance(timings, Mapping) or not timings:
        raise ValueError("timings must map at least one name to its run times")
    for name, secs in timings.items():
        if len(secs) != len(T):
            raise ValueError(f"timings[{name!r}] has {len(secs)} values but T has {len(T)}")
    if extrapolate_to is not None and extrapolate_to <= T.max():
        raise ValueError(f"extrapolate_to must exceed the largest measured T={int(T.max())}, "
                         f"got {extrapolate_to}")
    fig = plot_scaling(T, timings, ylabel="seconds per call (log scale)", title=title, size=(6.8, 4.0))
    if extrapolate_to is None:
        return fig
    ax = fig.axes[0]
    measured = list(ax.lines)
    for line, (name, secs) in zip(measured, timings.items()):
        coef, p = fit_power_law(T, secs, (exponents or {}).get(name))
        grid = np.geomspace(T.min(), extrapolate_to, 64)
        ax.plot(grid, coef * grid ** p, "--", color=line.get_color(), lw=1.2)
        end = coef * extrapolate_to ** p
        ax.annotate(format_seconds(end), (extrapolate_to, end), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color=line.get_color())
        line.set_label(f"{name}  (~T^{p:.3g})")
    ax.axvspan(T.max(), extrapolate_to, color="0.93", zorder=0)
    ax.text(np.sqrt(T.max() * extrapolate_to), 0.97, "extrapolated", transform=ax.get_xaxis_transform(),
            ha="center", va="top", fontsize=8, color="0.4")
    ticks = 2.0 ** np.arange(np.floor(np.log2(T.min())), np.log2(extrapolate_to) + 1, 2)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlim(T.min() / 1.3, extrapolate_to * 4)
    ax.legend(fontsize=8, loc="upper left")
    return fig
