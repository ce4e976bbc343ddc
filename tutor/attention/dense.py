"""Dense masked attention: the reference every other implementation must equal.

Full (T x T) scores, one mixed mask from :func:`tutor.masks.hybrid_mask`, one softmax. It is
O(T^2) in time and memory, which is exactly why the rest of the course exists.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masks import hybrid_mask
from ._checks import check_inputs
from ._common import masked_softmax


def dense_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                    global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                    causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                    dropout_p: float = 0.0):
    """Hybrid local + global attention computed densely.

    q, k: (B, H, T, Dh); v: (B, H, T, Dv); global_mask, key_padding_mask: (B, T) bool or None.
    Returns out (B, H, T, Dv) in q's dtype, and with ``return_weights`` also the (B, H, T, T)
    probabilities (float32, zero where not allowed; before dropout). ``dropout_p`` drops
    probabilities (the caller decides when, e.g. only in training).
    """
    window, global_mask, key_padding_mask, scale = check_inputs(
        q, k, v, window, global_mask, key_padding_mask, scale)
    T = q.shape[2]
    allowed = hybrid_mask(T, window, global_mask, key_padding_mask, causal=causal,
                          device=q.device)[:, None]                        # (B or 1, 1, T, T)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale             # (B, H, T, T)
    weights = masked_softmax(scores, allowed)                              # (B, H, T, T)
    p = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    out = (p @ v.float()).to(q.dtype)                                      # (B, H, T, Dv)
    return (out, weights) if return_weights else out
