"""Interactive explorers for the notebooks (ipywidgets 8 / JupyterLab 4): widget glue only.

    from tutor.widgets import pattern_explorer; pattern_explorer()
    from tutor.widgets import attention_explorer; attention_explorer()
    from tutor.widgets import cost_explorer; cost_explorer()

Each call returns a ``VBox`` whose controls are public attributes (``ex.window.value = 5``
redraws), and whose last results are kept for tests and curious learners (``ex.mask``,
``ex.weights``, ``ex.figure``, ...). Figures come from :mod:`tutor.viz.explorers`; each is
rendered once to PNG into ``ex.out`` (a ``widgets.Output``) and then closed, so nothing leaks.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Optional, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import traitlets
from matplotlib.figure import Figure

from .viz import explorers as ex
from .viz.masks import plot_mask

__all__ = ["pattern_explorer", "attention_explorer", "cost_explorer", "PatternExplorer",
           "AttentionExplorer", "CostExplorer", "GlobalTokenPicker", "show_figure"]

_SLIDER = dict(continuous_update=False, style={"description_width": "90px"})


def show_figure(out: widgets.Output, fig: Figure) -> None:
    """Replace the content of ``out`` by ``fig`` as a PNG, then close ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    w, h = (fig.get_size_inches() * fig.dpi).astype(int)
    out.outputs = ({"output_type": "display_data", "metadata": {},
                    "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                             "text/plain": f"<Figure size {w}x{h}>"}},)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A small HTML table (cells are our own numbers, no escaping needed)."""
    cells = lambda tag, row: "".join(f"<{tag}>{c}</{tag}>" for c in row)  # noqa: E731
    return "<table><tr>" + cells("th", header) + "</tr>" + "".join(
        f"<tr>{cells('td', r)}</tr>" for r in rows) + "</table>"


def _fmt_positions(positions: Sequence[int]) -> str:
    return ", ".join(map(str, positions))


class GlobalTokenPicker(widgets.HBox):
    """Global token positions, clicked (``select``, a SelectMultiple) or typed (``text``: "0, 17").

    The two stay in sync; ``positions`` (a sorted tuple, observable) is the current choice.
    Typing something invalid shows the reason in ``message`` and keeps the previous choice.
    """
    positions = traitlets.Tuple()

    def __init__(self, T: int, positions: Sequence[int] = (0,)):
        self.T, self._syncing = T, False
        self.select = widgets.SelectMultiple(options=[(str(i), i) for i in range(T)], rows=5,
                                             description="global", layout={"width": "150px"})
        self.text = widgets.Text(placeholder="0, 17 | 0-3 | all", continuous_update=False,
                                 description="typed", layout={"width": "230px"})
        self.message = widgets.HTML()
        super().__init__([self.select, widgets.VBox([self.text, self.message])])
        self._set(ex.parse_positions(_fmt_positions(positions), T))
        self.select.observe(self._from_select, "value")
        self.text.observe(self._from_text, "value")

    def _set(self, positions) -> None:
        self._syncing = True
        try:
            self.select.value, self.text.value, self.message.value = positions, _fmt_positions(positions), ""
        finally:
            self._syncing = False
        self.positions = tuple(positions)

    def _from_select(self, change) -> None:
        if not self._syncing:
            self._set(tuple(sorted(change["new"])))

    def _from_text(self, change) -> None:
        if self._syncing:
            return
        try:
            self._set(ex.parse_positions(change["new"], self.T))
        except ValueError as err:
            self.message.value = f"<span style='color:#c53030'>{html.escape(str(err))}</span>"

    def set_length(self, T: int) -> None:
        """New sequence length: positions >= T are dropped."""
        kept = tuple(p for p in self.positions if p < T)
        self.T, self._syncing = T, True
        try:
            self.select.options = [(str(i), i) for i in range(T)]
        finally:
            self._syncing = False
        self._set(kept)


class _Explorer(widgets.VBox):
    """Shared glue: an ``out`` Output for the figure, a ``status`` HTML, redraw on any change."""

    def _wire(self, *controls) -> None:
        self._muted = False
        self.add_class("tutor-explorer")                 # stable hooks for the browser tests
        self.out.add_class("tutor-explorer-figure")
        for c in controls:
            c.observe(self._changed, "positions" if isinstance(c, GlobalTokenPicker) else "value")
        self.update()

    def _changed(self, change) -> None:
        if not self._muted:
            self.update()

    def _show(self, fig: Figure) -> None:
        self.figure = fig
        show_figure(self.out, fig)

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class PatternExplorer(_Explorer):
    """Build a sparsity pattern and see its mask, pair count, sparsity and memory formulas.

    Controls: ``T``, ``window``, ``causal``, ``globals_`` (a :class:`GlobalTokenPicker`),
    ``dilation``, ``num_random`` with ``seed`` (BigBird random keys), ``block`` (0 = off).
    Results: ``mask`` (T, T) bool tensor, ``allowed_pairs``, ``sparsity``, ``memory`` (impl -> bytes),
    ``figure``; ``stats`` (HTML) shows the numbers.
    """

    def __init__(self, T: int = 32, window: int = 2, global_positions: Sequence[int] = (0,),
                 causal: bool = False, Dh: int = 64):
        self.Dh = Dh
        self.T = widgets.IntSlider(T, min=2, max=128, description="T", **_SLIDER)
        self.window = widgets.IntSlider(window, min=0, max=128, description="window w", **_SLIDER)
        self.causal = widgets.Checkbox(causal, description="causal", indent=False)
        self.globals_ = GlobalTokenPicker(T, global_positions)
        self.dilation = widgets.IntSlider(1, min=1, max=8, description="dilation", **_SLIDER)
        self.num_random = widgets.IntSlider(0, min=0, max=8, description="random keys", **_SLIDER)
        self.seed = widgets.IntText(0, description="seed", layout={"width": "160px"})
        self.block = widgets.IntSlider(0, min=0, max=32, description="block (0=off)", **_SLIDER)
        self.stats, self.out = widgets.HTML(), widgets.Output()
        left = widgets.VBox([self.T, self.window, self.causal, self.dilation, self.num_random,
                             self.seed, self.block, self.globals_, self.stats])
        super().__init__([widgets.HBox([left, self.out])])
        self.T.observe(self._new_length, "value")
        self._wire(self.window, self.causal, self.globals_, self.dilation, self.num_random,
                   self.seed, self.block)

    def _new_length(self, change) -> None:
        self._muted = True
        try:
            self.globals_.set_length(change["new"])
        finally:
            self._muted = False
        self.update()

    def update(self) -> None:
        """Recompute the mask and numbers from the controls, redraw."""
        T, w, g = self.T.value, self.window.value, self.globals_.positions
        self.mask = ex.pattern_mask(T, w, g, causal=self.causal.value, dilation=self.dilation.value,
                                    num_random=self.num_random.value, seed=self.seed.value,
                                    block=self.block.value)                     # (T, T)
        self.allowed_pairs = int(self.mask.sum())
        self.sparsity = 1.0 - self.allowed_pairs / T**2
        cost = dict(Dh=self.Dh, causal=self.causal.value)
        self.memory = {i: ex.attention_cost(i, T, w, len(g), **cost)["memory_bytes"] for i in ex.IMPLS}
        extra = self.dilation.value > 1 or self.num_random.value > 0 or self.block.value > 0
        dense = self.memory["dense"]
        self.stats.value = (
            f"<b>allowed pairs: {self.allowed_pairs} / {T * T}</b> (T&sup2;)<br>"
            f"density {1 - self.sparsity:.1%}, sparsity {self.sparsity:.1%}"
            + _table([f"memory (B=H=1, Dh={self.Dh}, fp32)", "bytes", "vs dense"],
                     [[i, ex.format_bytes(m), f"{m / dense:.2f}x"] for i, m in self.memory.items()])
            + ("<i>unfold/hybrid formulas cover local + global only</i>" if extra else ""))
        self._show(plot_mask(self.mask, title=self.mask_name(), global_mask=list(g) or None, size=4.2))

    def mask_name(self) -> str:
        """Plot title: the patterns switched on."""
        dil = self.dilation.value
        parts = [f"window {self.window.value}" + (f" dilation {dil}" if dil > 1 else "")]
        if self.block.value:
            parts.append(f"block {self.block.value}")
        if self.num_random.value:
            parts.append(f"random {self.num_random.value}")
        if self.globals_.positions:
            parts.append(f"{len(self.globals_.positions)} global")
        return " | ".join(parts) + (" & causal" if self.causal.value else "")


class AttentionExplorer(_Explorer):
    """A seeded toy sequence through ``HybridSparseAttention``: one query's row and the whole map.

    Controls: ``impl`` (dense/looped/unfold/hybrid), ``head``, ``query``, ``window``, ``causal``,
    ``globals_``. Results: ``weights`` (H, T, T) of the chosen impl, ``row`` = ``weights[head, query]``
    as NumPy, ``max_diff`` vs the dense reference, ``figure``.
    """

    def __init__(self, T: int = 24, window: int = 2, global_positions: Sequence[int] = (0,),
                 num_heads: int = 4, dim: int = 32, seed: int = 0):
        self.seq_len, self.dim, self.num_heads, self.seed = T, dim, num_heads, seed
        self.impl = widgets.ToggleButtons(options=["dense", "looped", "unfold", "hybrid"], value="hybrid",
                                          description="impl", style={"button_width": "70px"})
        self.head = widgets.IntSlider(0, min=0, max=num_heads - 1, description="head", **_SLIDER)
        self.query = widgets.IntSlider(min(5, T - 1), min=0, max=T - 1, description="query i", **_SLIDER)
        self.window = widgets.IntSlider(window, min=0, max=T, description="window w", **_SLIDER)
        self.causal = widgets.Checkbox(False, description="causal", indent=False)
        self.globals_ = GlobalTokenPicker(T, global_positions)
        self.status, self.out = widgets.HTML(), widgets.Output()
        controls = widgets.VBox([self.head, self.query, self.window, self.causal])
        super().__init__([self.impl, widgets.HBox([controls, self.globals_]), self.status, self.out])
        self._wire(self.impl, self.head, self.query, self.window, self.causal, self.globals_)

    def update(self) -> None:
        """Run the layer with the chosen settings, redraw the row and the map."""
        kw = dict(causal=self.causal.value, dim=self.dim, num_heads=self.num_heads, seed=self.seed)
        g, w, h, i = self.globals_.positions, self.window.value, self.head.value, self.query.value
        self.weights = ex.toy_attention_weights(self.seq_len, w, g, impl=self.impl.value, **kw)  # (H, T, T)
        reference = ex.toy_attention_weights(self.seq_len, w, g, impl="dense", **kw)            # (H, T, T)
        self.max_diff = float((self.weights - reference).abs().max())
        self.row = self.weights[h, i].numpy()                                                 # (T,)
        gl = ", ".join(map(str, g)) or "none"
        self.status.value = (
            f"impl <b>{self.impl.value}</b>: max |w - w_dense| = {self.max_diff:.1e}; "
            f"row {i} sums to {self.row.sum():.4f}.<br>Global tokens [{gl}]: each row "
            f"<i>collects</i> from every key (solid box), each column <i>broadcasts</i> to every "
            f"query (dashed box).")
        self._show(ex.plot_attention_explorer(self.weights[h], i, w, g, causal=self.causal.value,
                                              title=f"head {h}, {self.impl.value}"))


class CostExplorer(_Explorer):
    """Predicted FLOPs and memory of dense / unfold / hybrid vs T, measured points overlaid.

    Controls: ``T`` (log slider, powers of two), ``window``, ``G``. Results: ``costs`` (impl ->
    {"flops", "memory_bytes"} at T), ``measured`` (benchmark rows), ``figure``; ``table`` (HTML).
    B, H, Dh (and the default window and G) come from the benchmark CSVs when there are any.
    """

    def __init__(self, B: Optional[int] = None, H: Optional[int] = None, Dh: Optional[int] = None,
                 paths=None):
        self.measured = ex.load_benchmarks(paths)
        ref = next((r for r in self.measured if r["impl"] in ex.IMPLS), None)   # a measured setting

        def pick(given, key, default):
            return given if given is not None else (int(ref[key]) if ref else default)

        self.B, self.H, self.Dh = pick(B, "B", 1), pick(H, "H", 8), pick(Dh, "Dh", 64)
        self.T = widgets.FloatLogSlider(4096, base=2, min=6, max=16, step=1, description="T",
                                        readout_format=".0f", **_SLIDER)
        self.window = widgets.IntSlider(pick(None, "window", 64), min=0, max=1024, description="window w",
                                        **_SLIDER)
        self.G = widgets.IntSlider(pick(None, "G", 2), min=0, max=64, description="globals G", **_SLIDER)
        self.table, self.out = widgets.HTML(), widgets.Output()
        super().__init__([widgets.HBox([widgets.VBox([self.T, self.window, self.G]), self.table]), self.out])
        self._wire(self.T, self.window, self.G)

    def update(self) -> None:
        """Recompute the costs at T and redraw the curves."""
        T, w = int(round(self.T.value)), self.window.value
        G = min(self.G.value, T)
        shape = dict(B=self.B, H=self.H, Dh=self.Dh)
        self.costs = {i: ex.attention_cost(i, T, w, G, **shape) for i in ex.IMPLS}
        dense = self.costs["dense"]["memory_bytes"]
        self.table.value = f"<b>T = {T}</b>, window {w}, G {G}" + _table(
            ["impl", "FLOPs", "memory", "mem vs dense"],
            [[i, f"{c['flops']:.3g}", ex.format_bytes(c["memory_bytes"]), f"{c['memory_bytes'] / dense:.3g}x"]
             for i, c in self.costs.items()])
        self._show(ex.plot_costs(T, w, G, measured=self.measured, **shape))


def pattern_explorer(**kwargs) -> PatternExplorer:
    """Mask, pair count and memory of local / causal / global / dilated / random / block patterns."""
    return PatternExplorer(**kwargs)


def attention_explorer(**kwargs) -> AttentionExplorer:
    """One query's attention row and the full map of a toy ``HybridSparseAttention`` layer."""
    return AttentionExplorer(**kwargs)


def cost_explorer(**kwargs) -> CostExplorer:
    """Predicted (and measured) FLOPs and memory of dense, unfold and hybrid attention vs T."""
    return CostExplorer(**kwargs)
