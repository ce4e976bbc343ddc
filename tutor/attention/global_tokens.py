"""Global tokens as index lists: where they are, gathering them, writing their rows back.

A global token reads every key and is read by every query. Sequences of a batch may have different
numbers of them, so positions are kept as ``idx`` (B, G) with a ``valid`` (B, G) flag for the
padded slots, G being the largest count in the batch.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .global_rows import global_query_probs

__all__ = ["effective_globals", "global_index", "global_slots", "gather_tokens", "scatter_rows",
           "write_global_rows", "global_row_probs"]


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


def write_global_rows(out: Tensor, idx: Tensor, valid: Tensor, rows: Tensor, *, inplace: bool) -> Tensor:
    """Write the global rows back to their places: row ``g`` of ``rows`` goes to row ``idx[batch, g]``.

    out: (B, H, T, C); idx, valid: (B, G); rows: (B, H, G, C). Only valid slots are written.
    ``inplace=True`` writes into ``out`` and returns it: no copy, for a buffer the backend owns
    and autograd does not track. ``inplace=False`` leaves ``out`` untouched and returns a new
    tensor (:func:`scatter_rows`), safe under autograd.
    """
    if not inplace:
        return scatter_rows(out, idx, valid, rows)                          # (B, H, T, C)
    bi, gi = valid.nonzero(as_tuple=True)                                  # (N,), (N,): real slots
    out[bi, :, idx[bi, gi]] = rows[bi, :, gi].to(out.dtype)                # (N, H, C) rows
    return out


def global_row_probs(q: Tensor, k: Tensor, idx: Tensor, valid: Tensor,
                     key_padding_mask: Optional[Tensor], causal: bool, scale: float,
                     acc: torch.dtype = torch.float32) -> Tensor:
    """Softmax rows of the global queries: each reads every unpadded (and, if causal, earlier) key.

    q, k: (B, H, T, Dh); idx, valid: (B, G). Returns probabilities (B, H, G, T) in ``acc``, zero
    rows for the invalid (padded) slots. Memory is G x T: linear in T for a fixed G. The global
    rows themselves (output, lse, gradients) are :mod:`.global_rows`.
    """
    return global_query_probs(gather_tokens(q, idx), k, idx, valid, key_padding_mask, causal, scale, acc)


def global_slots(global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                 B: int, T: int, device) -> Tuple[Tensor, Tensor]:
    """The global tokens that count (not padding) as ``idx, valid`` (B, G): the preamble of every backend.

    G is 0 when there is no global token at all.
    """
    is_global = effective_globals(global_mask, key_padding_mask)
    if is_global is None:
        is_global = torch.zeros(B, T, dtype=torch.bool, device=device)
    return global_index(is_global)                                         # (B, G), (B, G)
