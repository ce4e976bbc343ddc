"""The attention explorer (notebooks 01, 02): one query's row and the whole map of a toy layer."""
from __future__ import annotations

from typing import Sequence

import ipywidgets as widgets
import torch
from torch import Tensor

from ..attention import HybridSparseAttention
from ..masks import global_mask_at
from ..viz.explorers import plot_attention_explorer
from .base import SLIDER, Explorer
from .picker import GlobalTokenPicker


def toy_attention_weights(T: int, window: int, global_positions: Sequence[int] = (), *,
                          impl: str = "hybrid", causal: bool = False, dim: int = 32,
                          num_heads: int = 4, seed: int = 0) -> Tensor:
    """A seeded toy sequence x (1, T, dim) through a seeded ``HybridSparseAttention``.

    Returns the attention probabilities (H, T, T) of batch element 0. The global RNG is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = HybridSparseAttention(dim, num_heads, window, impl=impl, causal=causal).eval()
        x = torch.randn(1, T, dim)                                            # (1, T, dim)
    g = global_mask_at(T, global_positions)                                   # (1, T)
    with torch.no_grad():
        _, weights = layer(x, global_mask=g, return_weights=True)             # (1, H, T, T)
    return weights[0]                                                         # (H, T, T)


class AttentionExplorer(Explorer):
    """A seeded toy sequence through ``HybridSparseAttention``: one query's row and the whole map.

    Controls: ``impl`` (dense/looped/unfold/hybrid), ``head``, ``query``, ``window``, ``causal``,
    ``globals_``. Results: ``weights`` (H, T, T) of the chosen impl, ``row`` = ``weights[head, query]``
    as NumPy, ``max_diff`` vs the dense reference, ``figure``.
    """

    def __init__(self, T: int = 24, window: int = 2, global_positions: Sequence[int] = (0,),
                 num_heads: int = 4, dim: int = 32, seed: int = 0):
        self.T, self.dim, self.num_heads, self.seed = T, dim, num_heads, seed
        self.impl = widgets.ToggleButtons(options=["dense", "looped", "unfold", "hybrid"], value="hybrid",
                                          description="impl", style={"button_width": "70px"})
        self.head = widgets.IntSlider(0, min=0, max=num_heads - 1, description="head", **SLIDER)
        self.query = widgets.IntSlider(min(5, T - 1), min=0, max=T - 1, description="query i", **SLIDER)
        self.window = widgets.IntSlider(window, min=0, max=T, description="window w", **SLIDER)
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
        self.weights = toy_attention_weights(self.T, w, g, impl=self.impl.value, **kw)  # (H, T, T)
        reference = toy_attention_weights(self.T, w, g, impl="dense", **kw)            # (H, T, T)
        self.max_diff = float((self.weights - reference).abs().max())
        self.row = self.weights[h, i].numpy()                                              # (T,)
        gl = ", ".join(map(str, g)) or "none"
        self.status.value = (
            f"impl <b>{self.impl.value}</b>: max |w - w_dense| = {self.max_diff:.1e}; "
            f"row {i} sums to {self.row.sum():.4f}.<br>Global tokens [{gl}]: each row "
            f"<i>collects</i> from every key (solid box), each column <i>broadcasts</i> to every "
            f"query (dashed box).")
        self._show(plot_attention_explorer(self.weights[h], i, w, g, causal=self.causal.value,
                                           title=f"head {h}, {self.impl.value}"))


def attention_explorer(**kwargs) -> AttentionExplorer:
    """One query's attention row and the full map of a toy ``HybridSparseAttention`` layer."""
    return AttentionExplorer(**kwargs)
