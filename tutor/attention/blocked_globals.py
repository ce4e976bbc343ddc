"""The global tokens of the blocked backend: their columns, their rows, and the (T, T) weights.

* **global columns**: every query block scores the G global keys as G extra columns of its own
  softmax (:func:`global_columns` gathers those keys and values once per call);
* **global rows**: a global query reads every key, so its row is one dense G x T pass
  (:func:`plan_global_rows`, the plan's call of :mod:`.global_rows`), written over the local result;
* **weights**: ``return_weights=True`` scatters each chunk's ``[span | global]`` probabilities
  into (B, H, T, T) rows (:func:`weights_chunk`), the global rows last (:func:`all_weights`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .blocked_steps import BlockedPlan
from .global_rows import GlobalRows, global_rows
from .global_tokens import gather_tokens, scatter_rows


def global_columns(plan: BlockedPlan, k: Tensor, v: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The global keys and values (B*H, G, Dh) in the matmul dtype, zero in invalid slots (None if G = 0)."""
    if not plan.G:
        return None, None
    invalid = ~plan.valid[:, None, :, None]                                # (B, 1, G, 1)
    k_g = gather_tokens(k, plan.idx).to(plan.mm).masked_fill(invalid, 0)   # (B, H, G, Dh)
    v_g = gather_tokens(v, plan.idx).to(plan.mm).masked_fill(invalid, 0)
    return k_g.reshape(plan.BH, plan.G, plan.Dh), v_g.reshape(plan.BH, plan.G, plan.Dh)


def plan_global_rows(plan: BlockedPlan, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> GlobalRows:
    """The global queries' rows (:func:`.global_rows.global_rows`) with the plan's masks and dtype:
    out (B, H, G, Dh), probs (B, H, G, T), lse (B, H, G), ``+inf`` for an invalid slot."""
    return global_rows(gather_tokens(q, plan.idx), k, v, plan.idx, plan.valid, plan.key_padding_mask,
                       plan.causal, plan.scale, plan.acc, dropout_p)


def weights_chunk(plan: BlockedPlan, p: Tensor, n0: int, n1: int) -> Tensor:
    """A chunk's probabilities p (n*B*H, b, S+G) as rows of the weights: (B, H, t, T), t the rows < T."""
    B, H, T, b, S, G = plan.B, plan.H, plan.T, plan.b, plan.S, plan.G
    n, t0 = n1 - n0, n0 * plan.b
    t = min(T - t0, n * b)
    p = p.view(n, B, H, b, S + G).permute(1, 2, 0, 3, 4).reshape(B, H, n * b, S + G)[:, :, :t]  # (B, H, t, S+G)
    rows = torch.arange(t0, t0 + t, device=p.device)                       # query positions
    cols = (rows // b * b - plan.n_side * b)[:, None] + torch.arange(S, device=p.device)[None, :]  # (t, S)
    w = torch.zeros(B, H, t, T, dtype=p.dtype, device=p.device)
    # out-of-range slots are masked (probability exactly 0), so clamping them adds nothing
    w = w.scatter_add(3, cols.clamp(0, T - 1).expand(B, H, t, S), p[..., :S])  # (B, H, t, T)
    return w.scatter_add(3, plan.idx[:, None, None, :].expand(B, H, t, -1), p[..., S:])


def all_weights(plan: BlockedPlan, rows: List[Tensor], p_rows: Optional[Tensor]) -> Tensor:
    """The chunks' weight rows (B, H, t, T) joined, the global rows written over them: (B, H, T, T)."""
    weights = torch.cat(rows, dim=2)                                       # (B, H, T, T)
    return weights if p_rows is None else scatter_rows(weights, plan.idx, plan.valid, p_rows)
