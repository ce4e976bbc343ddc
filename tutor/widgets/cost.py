"""The cost explorer (notebooks 03, 04): predicted FLOPs and memory vs T, measured points overlaid."""
from __future__ import annotations

from typing import Optional

import ipywidgets as widgets

from ..bench.report import load_benchmarks
from ..costs import IMPLS, attention_cost
from ..viz.explorers import plot_costs
from ..viz.unfold import format_bytes
from .base import SLIDER, Explorer, html_table


class CostExplorer(Explorer):
    """Predicted FLOPs and memory of dense / unfold / hybrid vs T, measured points overlaid.

    Controls: ``T`` (log slider, powers of two), ``window``, ``G``. Results: ``costs`` (impl ->
    {"flops", "memory_bytes"} at T, from :func:`tutor.costs.attention_cost`), ``measured``
    (benchmark rows of :func:`tutor.bench.load_benchmarks`), ``figure``; ``table`` (HTML).
    B, H, Dh (and the default window and G) come from the benchmark CSVs when there are any.
    """

    def __init__(self, B: Optional[int] = None, H: Optional[int] = None, Dh: Optional[int] = None,
                 paths=None):
        self.measured = load_benchmarks(paths)
        ref = next((r for r in self.measured if r["impl"] in IMPLS), None)      # a measured setting

        def pick(given, key, default):
            return given if given is not None else (int(ref[key]) if ref else default)

        self.B, self.H, self.Dh = pick(B, "B", 1), pick(H, "H", 8), pick(Dh, "Dh", 64)
        self.T = widgets.FloatLogSlider(4096, base=2, min=6, max=16, step=1, description="T",
                                        readout_format=".0f", **SLIDER)
        self.window = widgets.IntSlider(pick(None, "window", 64), min=0, max=1024, description="window w",
                                        **SLIDER)
        self.G = widgets.IntSlider(pick(None, "G", 2), min=0, max=64, description="globals G", **SLIDER)
        self.table, self.out = widgets.HTML(), widgets.Output()
        super().__init__([widgets.HBox([widgets.VBox([self.T, self.window, self.G]), self.table]), self.out])
        self._wire(self.T, self.window, self.G)

    def update(self) -> None:
        """Recompute the costs at T and redraw the curves."""
        T, w = int(round(self.T.value)), self.window.value
        G = min(self.G.value, T)
        shape = dict(B=self.B, H=self.H, Dh=self.Dh)
        self.costs = {i: attention_cost(i, T, w, G, **shape) for i in IMPLS}
        dense = self.costs["dense"]["memory_bytes"]
        self.table.value = f"<b>T = {T}</b>, window {w}, G {G}" + html_table(
            ["impl", "FLOPs", "memory", "mem vs dense"],
            [[i, f"{c['flops']:.3g}", format_bytes(c["memory_bytes"]), f"{c['memory_bytes'] / dense:.3g}x"]
             for i, c in self.costs.items()])
        self._show(plot_costs(T, w, G, measured=self.measured, **shape))


def cost_explorer(**kwargs) -> CostExplorer:
    """Predicted (and measured) FLOPs and memory of dense, unfold and hybrid attention vs T."""
    return CostExplorer(**kwargs)
