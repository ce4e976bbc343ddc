"""The pattern explorer (notebook 00): a sparsity pattern's mask, pair count, sparsity and memory."""
from __future__ import annotations

import math
from typing import Sequence

import ipywidgets as widgets

from ..costs import IMPLS, attention_cost, count_allowed
from ..patterns import pattern_mask
from ..viz.masks import plot_mask
from ..viz.unfold import format_bytes
from .base import SLIDER, Explorer, html_table
from .picker import GlobalTokenPicker


class PatternExplorer(Explorer):
    """Build a sparsity pattern and see its mask, pair count, sparsity and memory formulas.

    Controls: ``T``, ``window``, ``causal``, ``globals_`` (a :class:`GlobalTokenPicker`),
    ``dilation``, ``block_size`` (b of the block patterns), ``block_diagonal``, ``random_blocks``
    with ``seed`` (BigBird's random key blocks per query block, as in notebook 05).
    Results: ``mask`` (T, T) bool tensor (:func:`tutor.patterns.pattern_mask`), ``allowed_pairs``,
    ``sparsity``, ``memory`` (impl -> bytes), ``figure``; ``stats`` (HTML) shows the numbers.
    """

    def __init__(self, T: int = 32, window: int = 2, global_positions: Sequence[int] = (0,),
                 causal: bool = False, Dh: int = 64):
        self.Dh = Dh
        self.T = widgets.IntSlider(T, min=2, max=128, description="T", **SLIDER)
        self.window = widgets.IntSlider(window, min=0, max=128, description="window w", **SLIDER)
        self.causal = widgets.Checkbox(causal, description="causal", indent=False)
        self.globals_ = GlobalTokenPicker(T, global_positions)
        self.dilation = widgets.IntSlider(1, min=1, max=8, description="dilation", **SLIDER)
        self.block_size = widgets.IntSlider(4, min=1, max=32, description="block b", **SLIDER)
        self.block_diagonal = widgets.Checkbox(False, description="block diagonal", indent=False)
        self.random_blocks = widgets.IntSlider(0, min=0, max=8, description="random blocks", **SLIDER)
        self.seed = widgets.IntText(0, description="seed", layout={"width": "160px"})
        self.stats, self.out = widgets.HTML(), widgets.Output()
        left = widgets.VBox([self.T, self.window, self.causal, self.dilation, self.block_size,
                             self.block_diagonal, self.random_blocks, self.seed, self.globals_, self.stats])
        super().__init__([widgets.HBox([left, self.out])])
        self.T.observe(self._new_length, "value")
        self._wire(self.window, self.causal, self.globals_, self.dilation, self.block_size,
                   self.block_diagonal, self.random_blocks, self.seed)

    def _new_length(self, change) -> None:
        self._muted = True
        try:
            self.globals_.set_length(change["new"])
        finally:
            self._muted = False
        self.update()

    def update(self) -> None:
        """Recompute the mask and numbers from the controls, redraw."""
        T, w, g, b = self.T.value, self.window.value, self.globals_.positions, self.block_size.value
        self.n_random = min(self.random_blocks.value, math.ceil(T / b) - 1)   # BigBird: other blocks only
        self.mask = pattern_mask(T, w, g, causal=self.causal.value, dilation=self.dilation.value, block_size=b,
                                 block_diagonal=self.block_diagonal.value, random_blocks=self.n_random,
                                 seed=self.seed.value)                           # (T, T)
        self.allowed_pairs = count_allowed(self.mask)
        self.sparsity = 1.0 - self.allowed_pairs / T**2
        cost = dict(Dh=self.Dh, causal=self.causal.value)
        self.memory = {i: attention_cost(i, T, w, len(g), **cost)["memory_bytes"] for i in IMPLS}
        extra = self.dilation.value > 1 or self.n_random > 0 or self.block_diagonal.value
        capped = self.n_random < self.random_blocks.value
        dense = self.memory["dense"]
        self.stats.value = (
            f"<b>allowed pairs: {self.allowed_pairs} / {T * T}</b> (T&sup2;)<br>"
            f"density {1 - self.sparsity:.1%}, sparsity {self.sparsity:.1%}"
            + (f"<br><i>random blocks capped at {self.n_random}: the other blocks of T={T}</i>" if capped else "")
            + html_table([f"memory (B=H=1, Dh={self.Dh}, fp32)", "bytes", "vs dense"],
                         [[i, format_bytes(m), f"{m / dense:.2f}x"] for i, m in self.memory.items()])
            + ("<i>unfold/hybrid formulas cover local + global only</i>" if extra else ""))
        self._show(plot_mask(self.mask, title=self.mask_name(), global_mask=list(g) or None, size=4.2))

    def mask_name(self) -> str:
        """Plot title: the patterns switched on."""
        dil = self.dilation.value
        parts = [f"window {self.window.value}" + (f" dilation {dil}" if dil > 1 else "")]
        if self.block_diagonal.value:
            parts.append(f"block diagonal b={self.block_size.value}")
        if self.n_random:
            parts.append(f"{self.n_random} random blocks b={self.block_size.value}")
        if self.globals_.positions:
            parts.append(f"{len(self.globals_.positions)} global")
        return " | ".join(parts) + (" & causal" if self.causal.value else "")


def pattern_explorer(**kwargs) -> PatternExplorer:
    """Mask, pair count and memory of local / causal / global / dilated / block / BigBird random patterns."""
    return PatternExplorer(**kwargs)
