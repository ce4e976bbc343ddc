"""Dense masked attention: the reference every other implementation must equal.

Full (T x T) scores, one hybrid mask from :func:`tutor.masks.hybrid_mask`, one softmax. It is
O(T^2) in time and memory, which is exactly why the rest of the course exists.

Numerics that respect the mask: disallowed scores become ``-inf`` *before* the softmax (so a NaN
or inf in a key a row may not read never reaches that row), and the values of padded keys are
zeroed before ``P @ V`` (a probability of 0 times a NaN value would still be NaN).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..masks import MaskMod, hybrid_mask
from ._checks import check_inputs
from .softmax import accum_dtype, masked_softmax


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
    window, global_mask, key_padding_mask, scale = check_inputs(
        q, k, v, window, global_mask, key_padding_mask, scale, causal=causal,
        return_weights=return_weights, dropout_p=dropout_p, dilation=dilation)
    T = q.shape[2]
    pb = getattr(pattern, "batch_size", None)                              # a per-sequence pattern
    if pb is not None and pb != q.shape[0]:                                # must fit q's B: no broadcast
        raise ValueError(f"pattern {getattr(pattern, '__name__', 'pattern')!r} was built for B={pb} "
                         f"sequences, but q has shape {tuple(q.shape)}")
    allowed = hybrid_mask(T, window, global_mask, key_padding_mask, causal=causal, device=q.device,
                          dilation=dilation, pattern=pattern)[:, None]     # (B or 1, 1, T, T)
    acc = accum_dtype(q.dtype)
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale             # (B, H, T, T)
    weights = masked_softmax(scores, allowed)                              # (B, H, T, T)
    p = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    vf = v.to(acc)
    if key_padding_mask is not None:                                       # 0 * NaN is NaN: padded
        vf = vf.masked_fill(key_padding_mask[:, None, :, None], 0.0)       # values become exact 0
    out = (p @ vf).to(q.dtype)                                             # (B, H, T, Dh)
    return (out, weights) if return_weights else out
