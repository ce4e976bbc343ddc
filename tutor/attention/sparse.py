"""``sparse_attention(impl=...)``: one name for the four implementations of the same function.

``IMPLS`` maps each ``impl`` name to its function: the reference (``dense``), the loop
(``looped``), the vectorized window (``unfold``) and the memory-linear backends (``hybrid``).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .dense import dense_attention
from .hybrid import hybrid_attention
from .looped import looped_attention
from .unfold import unfold_attention

IMPLS = {"dense": dense_attention, "looped": looped_attention,
         "unfold": unfold_attention, "hybrid": hybrid_attention}


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                     global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                     causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                     impl: str = "hybrid", **kwargs):
    """Run docs/spec.md's attention with ``impl`` in {"dense", "looped", "unfold", "hybrid"}.

    Extra keyword arguments go to the implementation (``backend=`` for hybrid, ``dropout_p=``,
    and ``dilation=`` / ``pattern=`` for dense and hybrid: see :func:`tutor.masks.hybrid_mask`).
    """
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
    return IMPLS[impl](q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                       return_weights=return_weights, **kwargs)
