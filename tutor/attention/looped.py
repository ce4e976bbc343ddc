"""The explicit loop: for each query, gather its allowed keys and do one small softmax.

Written to be read, not to be fast: Python loops over B and T (heads are batched). The allowed
keys of query ``i`` are built as a *set*, so a global key that also sits in the local window is
scored once, and a global query reads every key (Longformer's symmetric global attention).
Only the allowed keys and values are ever gathered, so nothing else can reach a row.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .call import AttentionCall, attention_call
from .softmax import masked_softmax


def allowed_keys(i: int, T: int, window: int, is_global: List[bool], is_pad: Optional[List[bool]] = None,
                 causal: bool = False) -> List[int]:
    """Sorted key positions query ``i`` may attend (empty when ``i`` is padding).

    ``is_global``, ``is_pad``: T bools each (``is_pad=None``: no padding).
    """
    if is_pad is None:
        is_pad = [False] * T
    if is_pad[i]:
        return []
    if is_global[i]:
        keys = set(range(T))                                   # global row: read everything
    else:
        keys = set(range(max(0, i - window), min(T, i + window + 1)))
        keys |= {j for j in range(T) if is_global[j]}          # every row reads global keys
    if causal:
        keys = {j for j in keys if j <= i}
    return sorted(j for j in keys if not is_pad[j])


def looped_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                     global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                     causal: bool = False, scale: Optional[float] = None, return_weights: bool = False):
    """Same contract as :func:`dense_attention`, one query at a time (forward only in spirit).

    q, k, v: (B, H, T, Dh). Returns out (B, H, T, Dh) [, weights (B, H, T, T)].
    """
    return looped_forward(attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                                         return_weights=return_weights))


def looped_forward(call: AttentionCall):
    """:func:`looped_attention` of a validated call (no dropout, no dilation: the door's defaults)."""
    q, k, v, global_mask, key_padding_mask = call.q, call.k, call.v, call.global_mask, call.key_padding_mask
    B, H, T, _ = q.shape
    acc = call.acc
    out = torch.zeros(B, H, T, v.shape[-1], dtype=acc, device=q.device)
    weights = torch.zeros(B, H, T, T, dtype=acc, device=q.device) if call.return_weights else None
    for batch in range(B):
        is_global = [False] * T if global_mask is None else global_mask[batch].tolist()
        is_pad = [False] * T if key_padding_mask is None else key_padding_mask[batch].tolist()
        for i in range(T):
            keys = allowed_keys(i, T, call.reach, is_global, is_pad, call.causal)
            if not keys:
                continue                                       # no allowed key: the row stays 0
            idx = torch.tensor(keys, device=q.device)          # (n,)
            s = (k[batch, :, idx].to(acc) @ q[batch, :, i].to(acc)[:, :, None])[..., 0] * call.scale  # (H, n)
            p = masked_softmax(s, torch.ones_like(s, dtype=torch.bool))                 # (H, n)
            out[batch, :, i] = (p[:, None, :] @ v[batch, :, idx].to(acc))[:, 0]          # (H, Dh)
            if weights is not None:
                weights[batch, :, i, idx] = p
    out = out.to(q.dtype)
    return (out, weights) if call.return_weights else out
