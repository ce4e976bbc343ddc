"""Dense masked attention: the reference every other implementation must equal.

Full (T x T) scores, one hybrid mask from :func:`tutor.masks.hybrid_mask`, one softmax. It is
O(T^2) in time and memory, which is exactly why the rest of the course exists.

Numerics that respect the mask: disallowed scores become ``-inf`` *before* the softmax (so a NaN
or inf in a key a row may not read never reaches that row), and the values of padded keys are
zeroed before ``P @ V`` (a probability of 0 times a NaN value would still be NaN).
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from ..masks import MaskMod, create_mask, hybrid_rule
from .call import AttentionCall, attention_call
from .softmax import masked_softmax


def dense_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                    global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                    causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                    dropout_p: float = 0.0, dilation: int = 1, pattern: Optional[MaskMod] = None):
    """Hybrid local + global attention computed densely.

    q, k, v: (B, H, T, Dh); global_mask, key_padding_mask: (B, T) bool or None.
    Returns out (B, H, T, Dh) in q's dtype, and with ``return_weights`` also the (B, H, T, T)
    probabilities (float32, or float64 for float64 inputs; zero where not allowed; before
    dropout). ``dropout_p`` drops probabilities (the caller decides when, e.g. only in training).
    ``dilation`` and ``pattern`` widen the local term (see :func:`tutor.masks.hybrid_mask`):
    a dilated window, and any extra mask_mod OR-ed in (BigBird random blocks, LSH buckets, ...).
    """
    return dense_forward(attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                                        return_weights=return_weights, dropout_p=dropout_p, dilation=dilation,
                                        pattern=pattern))


def dense_forward(call: AttentionCall):
    """:func:`dense_attention` of a validated call: out (B, H, T, Dh) [, weights (B, H, T, T)]."""
    q, k, v, kpm = call.q, call.k, call.v, call.key_padding_mask
    per_sequence = call.global_mask is not None or kpm is not None or hasattr(call.pattern, "batch_size")
    rule = hybrid_rule(call.reach, call.global_mask, kpm, call.causal, call.dilation, call.pattern)
    allowed = create_mask(rule, q.shape[0] if per_sequence else 1, call.T, device=q.device)[:, None]  # (B or 1, 1, T, T)
    acc = call.acc
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * call.scale        # (B, H, T, T)
    weights = masked_softmax(scores, allowed)                              # (B, H, T, T)
    p = F.dropout(weights, call.dropout_p) if call.dropout_p > 0 else weights
    vf = v.to(acc)
    if kpm is not None:                                                    # 0 * NaN is NaN: padded
        vf = vf.masked_fill(kpm[:, None, :, None], 0.0)                    # values become exact 0
    out = (p @ vf).to(q.dtype)                                             # (B, H, T, Dh)
    return (out, weights) if call.return_weights else out
