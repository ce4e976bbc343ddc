"""Small pieces every implementation shares: the NaN-free masked softmax and the global index."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for scores and softmax statistics: float64 stays float64 (gradcheck), else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_softmax(scores: Tensor, allowed: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the allowed entries of ``scores`` (float32), exactly 0 elsewhere.

    A row with no allowed entry gives all zeros rather than NaN: we never compute ``-inf - -inf``.
    ``allowed`` broadcasts against ``scores``.
    """
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(scores - row_max)                       # exp(-inf) = 0 where not allowed
    denom = p.sum(dim=dim, keepdim=True)
    return p / torch.where(denom > 0, denom, torch.ones_like(denom))


def effective_globals(global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """Global tokens that are not padding: (B, T) bool, or None when there are none at all."""
    if global_mask is None:
        return None
    if key_padding_mask is not None:
        global_mask = global_mask & ~key_padding_mask
    return global_mask


def global_index(is_global: Tensor) -> Tuple[Tensor, Tensor]:
    """Positions of the global tokens of each sequence, padded to the largest count G.

    ``is_global``: (B, T) bool. Returns ``idx`` (B, G) long (0 where padded) and ``valid`` (B, G)
    bool. Sequences may have different numbers of global tokens; the padded slots are invalid and
    must never be scored as real keys.
    """
    B, T = is_global.shape
    counts = is_global.sum(dim=1)                                         # (B,)
    G = int(counts.max().item()) if B > 0 else 0
    # stable sort puts the global positions first, in order
    order = torch.sort((~is_global).to(torch.int8), dim=1, stable=True).indices  # (B, T)
    idx = order[:, :G]                                                    # (B, G)
    valid = torch.arange(G, device=is_global.device)[None, :] < counts[:, None]  # (B, G)
    return idx.masked_fill(~valid, 0), valid


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Pick tokens per sequence: x (B, H, T, D), idx (B, G) -> (B, H, G, D)."""
    B, H, _, D = x.shape
    return x.gather(2, idx[:, None, :, None].expand(B, H, idx.shape[1], D))  # (B, H, G, D)


def scatter_rows(x: Tensor, idx: Tensor, valid: Tensor, rows: Tensor) -> Tensor:
    """Out-of-place: replace rows ``idx`` of x (B, H, T, C) by rows (B, H, G, C) where valid.

    Invalid slots are sent to a spare row T that is cut off afterwards, so they never clobber
    a real row.
    """
    B, H, T, C = x.shape
    spare = torch.cat([x, x.new_zeros(B, H, 1, C)], dim=2)                   # (B, H, T+1, C)
    target = idx.masked_fill(~valid, T)[:, None, :, None].expand(B, H, idx.shape[1], C)
    return spare.scatter(2, target, rows.to(x.dtype))[:, :, :T]             # (B, H, T, C)


def global_row_probs(q: Tensor, k: Tensor, idx: Tensor, valid: Tensor,
                     key_padding_mask: Optional[Tensor], causal: bool, scale: float,
                     acc: torch.dtype = torch.float32) -> Tensor:
    """Softmax rows of the global queries: each reads every unpadded (and, if causal, earlier) key.

    q, k: (B, H, T, Dh); idx, valid: (B, G). Returns probabilities (B, H, G, T) in ``acc``, zero
    rows for the invalid (padded) slots. Memory is G x T: linear in T for a fixed G.
    """
    T = q.shape[2]
    qg = gather_tokens(q, idx).to(acc)                                     # (B, H, G, Dh)
    s = (qg @ k.to(acc).transpose(-1, -2)) * scale                         # (B, H, G, T)
    ok = valid[:, :, None].expand(-1, -1, T)                               # (B, G, T)
    if key_padding_mask is not None:
        ok = ok & ~key_padding_mask[:, None, :]
    if causal:
        ok = ok & (torch.arange(T, device=q.device)[None, None, :] <= idx[:, :, None])
    return masked_softmax(s, ok[:, None])                                  # (B, H, G, T)
