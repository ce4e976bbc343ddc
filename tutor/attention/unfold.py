"""Vectorized local + global attention with ``Tensor.unfold``.

Local keys: pad K and V with ``w`` zeros on each side of T and unfold windows of ``2w + 1``,
giving (B, H, T, 2w+1, Dh). The zero-padded edge slots are *masked*, not scored as real keys.
Global keys: gathered per sequence and padded to the largest count G (the padded slots masked).
One softmax runs over ``[local | global]``; a global key that also sits in a window is scored
only in the global columns, so no pair counts twice. Global rows are recomputed densely.
The window tensor is (2w+1) times the size of K: simple, but memory-hungry (see ``blocked``).
Padded values are zeroed first, so a masked slot adds an exact 0 (never ``0 * NaN``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .call import AttentionCall, attention_call
from .global_tokens import effective_globals, gather_tokens, global_row_probs, scatter_rows
from .softmax import masked_softmax


def unfold_windows(x: Tensor, window: int, fill=0) -> Tensor:
    """Sliding windows along T: x (B, H, T, D) -> (B, H, T, 2w+1, D); x (B, T) -> (B, T, 2w+1).

    Slot ``r`` of row ``i`` holds position ``i - w + r``; out-of-range slots hold ``fill``.
    """
    if x.dim() == 4:
        xp = F.pad(x, (0, 0, window, window), value=fill)                  # (B, H, T+2w, D)
        return xp.unfold(2, 2 * window + 1, 1).transpose(-1, -2)           # (B, H, T, 2w+1, D)
    xp = F.pad(x, (window, window), value=fill)                            # (B, T+2w)
    return xp.unfold(1, 2 * window + 1, 1)                                 # (B, T, 2w+1)


def local_allowed(T: int, window: int, is_global: Tensor, is_pad: Tensor, causal: bool) -> Tensor:
    """Which window slots are real, allowed, non-global keys: bool (B, T, 2w+1)."""
    in_range = unfold_windows(torch.ones(1, T, dtype=torch.bool, device=is_pad.device), window, False)
    ok = in_range & ~unfold_windows(is_pad, window, True) & ~unfold_windows(is_global, window, False)
    ok = ok & ~is_pad[:, :, None]                                          # padded queries read nothing
    if causal:
        ok = ok & (torch.arange(2 * window + 1, device=is_pad.device) <= window)
    return ok                                                              # (B, T, 2w+1)


def unfold_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                     global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                     causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                     dropout_p: float = 0.0):
    """Same contract as :func:`dense_attention`, vectorized with unfold.

    q, k, v: (B, H, T, Dh). Returns out (B, H, T, Dh) [, weights (B, H, T, T)].
    """
    return unfold_forward(attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                                         return_weights=return_weights, dropout_p=dropout_p))


def unfold_forward(call: AttentionCall):
    """:func:`unfold_attention` of a validated call: its windows are ``2 * call.reach + 1`` wide."""
    q, k, v, key_padding_mask = call.q, call.k, call.v, call.key_padding_mask
    window, causal, scale, dropout_p = call.reach, call.causal, call.scale, call.dropout_p
    B, H, T, _ = q.shape
    dev = q.device
    is_pad = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T, dtype=torch.bool, device=dev)
    is_global = effective_globals(call.global_mask, key_padding_mask)      # (B, T): global, not padding
    if is_global is None:
        is_global = torch.zeros(B, T, dtype=torch.bool, device=dev)
    idx, valid = call.slots                                                # (B, G), (B, G)
    acc = call.acc
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    if key_padding_mask is not None:                                       # padded values: exact 0
        vf = vf.masked_fill(key_padding_mask[:, None, :, None], 0.0)

    # local part
    k_win = unfold_windows(kf, window)                                     # (B, H, T, 2w+1, Dh)
    v_win = unfold_windows(vf, window)                                     # (B, H, T, 2w+1, Dh)
    s_loc = torch.einsum("bhtd,bhtrd->bhtr", qf, k_win) * scale            # (B, H, T, 2w+1)
    ok_loc = local_allowed(T, window, is_global, is_pad, causal)           # (B, T, 2w+1)

    # global columns
    k_g, v_g = gather_tokens(kf, idx), gather_tokens(vf, idx)             # (B, H, G, Dh) each
    s_glob = (qf @ k_g.transpose(-1, -2)) * scale                          # (B, H, T, G)
    ok_glob = valid[:, None, :] & ~is_pad[:, :, None]                      # (B, T, G)
    if causal:
        ok_glob = ok_glob & (idx[:, None, :] <= torch.arange(T, device=dev)[None, :, None])

    # one softmax over [local | global]
    p = masked_softmax(torch.cat([s_loc, s_glob], -1),
                       torch.cat([ok_loc, ok_glob], -1)[:, None])          # (B, H, T, 2w+1+G)
    p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
    p_loc, p_glob = p_drop.split([2 * window + 1, idx.shape[1]], dim=-1)
    out = torch.einsum("bhtr,bhtrd->bhtd", p_loc, v_win) + p_glob @ v_g   # (B, H, T, Dh)

    # global rows: dense over all keys
    p_rows = global_row_probs(q, k, idx, valid, key_padding_mask, causal, scale, acc)  # (B, H, G, T)
    p_rows_drop = F.dropout(p_rows, dropout_p) if dropout_p > 0 else p_rows
    out = scatter_rows(out, idx, valid, p_rows_drop @ vf).to(q.dtype)     # (B, H, T, Dh)
    if not call.return_weights:
        return out

    # attention map rebuilt by scatter: slot r of row i is column i - w + r
    p_loc, p_glob = p.split([2 * window + 1, idx.shape[1]], dim=-1)
    cols = (torch.arange(T, device=dev)[:, None] - window
            + torch.arange(2 * window + 1, device=dev)[None, :]).clamp(0, T - 1)  # (T, 2w+1)
    weights = torch.zeros(B, H, T, T, dtype=acc, device=dev)
    weights = weights.scatter_add(3, cols.expand(B, H, T, -1), p_loc)      # masked slots add 0
    weights = weights.scatter_add(3, idx[:, None, None, :].expand(B, H, T, -1), p_glob)
    weights = scatter_rows(weights, idx, valid, p_rows)                    # (B, H, T, T)
    return out, weights
