"""The global tokens of the blocked backend: their columns, their rows, and the (T, T) weights.

* **global columns**: every query block scores the G global keys as G extra columns of its own
  softmax (:func:`global_columns` gathers those keys and values once per call);
* **global rows**: a global query reads every key, so its row is one dense G x T pass
  (:func:`global_row_scores`, :func:`global_rows`), written over the local result;
* **weights**: ``return_weights=True`` scatters each chunk's ``[span | global]`` probabilities
  into (B, H, T, T) rows (:func:`weights_chunk`), the global rows last (:func:`all_weights`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocked_steps import NEG_INF, BlockedPlan
from .global_tokens import gather_tokens, scatter_rows
from .softmax import masked_softmax


def global_columns(plan: BlockedPlan, k: Tensor, v: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The global keys and values (B*H, G, Dh) in the matmul dtype, zero in invalid slots (None if G = 0)."""
    if not plan.G:
        return None, None
    invalid = ~plan.valid[:, None, :, None]                                # (B, 1, G, 1)
    k_g = gather_tokens(k, plan.idx).to(plan.mm).masked_fill(invalid, 0)   # (B, H, G, Dh)
    v_g = gather_tokens(v, plan.idx).to(plan.mm).masked_fill(invalid, 0)
    return k_g.reshape(plan.BH, plan.G, plan.Dh), v_g.reshape(plan.BH, plan.G, plan.Dh)


def global_row_allowed(plan: BlockedPlan) -> Tensor:
    """(B, 1, G, T) bool: the keys each global query reads (unpadded; earlier ones when causal)."""
    T = plan.T
    ok = plan.valid[:, :, None] & ~plan.pad[:, None, :]                    # (B, G, T)
    if plan.causal:
        ok = ok & (torch.arange(T, device=ok.device)[None, None, :] <= plan.idx[:, :, None])
    return ok[:, None]


def global_row_scores(plan: BlockedPlan, q: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
    """Scores of the global queries against every key, -inf where not allowed: (B, H, G, T) in ``acc``.

    Also returns the global queries ``qg`` (B, H, G, Dh) in ``acc``, unscaled, zero in invalid slots.
    """
    qg = gather_tokens(q, plan.idx).to(plan.acc).masked_fill(~plan.valid[:, None, :, None], 0)  # (B, H, G, Dh)
    s = (qg @ padded_to_zero(plan, k).transpose(-1, -2)).mul_(plan.scale)  # (B, H, G, T)
    return s.masked_fill(~global_row_allowed(plan), NEG_INF), qg


def padded_to_zero(plan: BlockedPlan, x: Tensor) -> Tensor:
    """x (B, H, T, Dh) in ``acc``, zero at padded positions (a copy only when there is padding)."""
    x = x.to(plan.acc)
    return x.masked_fill(plan.pad[:, None, :, None], 0) if plan.has_pad else x


def global_rows(plan: BlockedPlan, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0,
                with_lse: bool = False) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The global queries' rows: ``(out_rows (B, H, G, Dh), probs (B, H, G, T), lse (B, H, G) or None)``.

    Invalid (padded) slots get zero probabilities and ``lse = +inf`` (so that ``exp(s - lse)``
    recomputes their zeros). Memory is G x T: linear in T for a fixed G.
    """
    s, _ = global_row_scores(plan, q, k)                                   # (B, H, G, T)
    p = masked_softmax(s, global_row_allowed(plan))                        # (B, H, G, T)
    lse = row_lse(s) if with_lse else None                                 # (B, H, G)
    p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
    return p_drop @ padded_to_zero(plan, v), p, lse                       # (B, H, G, Dh)


def row_lse(s: Tensor) -> Tensor:
    """Log-sum-exp of masked score rows over the last dim; ``+inf`` for a row with nothing allowed.

    ``exp(s - lse)`` then gives the row's probabilities back, and exactly 0 for an empty row.
    """
    lse = torch.logsumexp(s, dim=-1)
    return lse.masked_fill_(lse == NEG_INF, float("inf"))


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
