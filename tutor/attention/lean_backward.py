"""The memory-lean backward pass of the blocked backend (FlashAttention's recompute trick).

Plain autograd over the blocked forward keeps every chunk's scores, probabilities and K/V
copies: O(T * S) floats for one backward pass. :class:`LeanBlockedAttention` keeps only q, k, v,
the output O and one log-sum-exp per row (``lse``: T local rows and G global rows), and in the
backward pass recomputes each chunk's probabilities ``P = exp(s - lse)`` and accumulates the
gradients chunk by chunk. With ``dO`` the gradient of the output and ``scale`` folded into q::

    D  = rowsum(dO * O)          # (rows,)   equals rowsum(P * dP): the softmax Jacobian in one number
    dP = dO V^T                  # (rows, keys)
    dS = P * (dP - D)            # (rows, keys)   gradient of the scores
    dQ = scale dS K,   dK = scale dS^T Q,   dV = P^T dO

Each chunk's keys are its span and the G global columns: every query adds to the global keys'
``dk, dv`` (gathered once, scattered back at the end). The global rows are one G x T pass of the
same formulas; their local rows are overwritten in the forward pass, so their ``dO`` is zeroed
in the chunk pass. Padded keys and values are zero in the recomputed blocks and padded or empty
rows have ``lse = +inf`` (so ``P = 0``): no ``0 * NaN`` from padding reaches a gradient.

Extra memory of a backward pass: dq, dk, dv (what autograd returns) plus one chunk's tensors.
Dropout is not replayed: a dropout mask would have to be regenerated chunk by chunk from a saved
generator state, so ``dropout_p > 0`` (and ``return_weights``, an output autograd would have to
differentiate) take the plain-autograd path (:func:`lean_why_not` says why). The backward is not
itself differentiable: double backward raises a RuntimeError.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .blocked_globals import global_columns
from .blocked_steps import BlockedPlan, blocks, chunk_scores, edge_slice, key_blocks, query_blocks
from .global_rows import global_rows_backward
from .global_tokens import gather_tokens
from .softmax import probs_from_lse

__all__ = ["BACKWARDS", "LeanBlockedAttention", "lean_why_not", "blocked_backward"]

#: the backward passes ``blocked_hybrid_attention(..., backward=...)`` offers
BACKWARDS = ("lean", "autograd")


def lean_why_not(dropout_p: float, return_weights: bool) -> Optional[str]:
    """None when the lean backward can run these options, else why plain autograd runs instead."""
    if dropout_p > 0:
        return "dropout is not replayed in the backward pass (its mask would need a saved generator state)"
    if return_weights:
        return "return_weights: the (B, H, T, T) weights are an output autograd would have to differentiate"
    return None


class LeanBlockedAttention(torch.autograd.Function):
    """Blocked hybrid attention whose backward pass recomputes each chunk instead of storing it.

    ``LeanBlockedAttention.apply(q, k, v, plan, run)``: ``run`` is the blocked chunk loop
    (:func:`tutor.attention.blocked.run_chunks`, passed in so this module sits below it). Saves
    q, k, v, the output and the per-row log-sum-exp; gradients for q, k, v only.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: BlockedPlan, run: Callable) -> Tensor:
        out, _, (lse, lse_rows) = run(plan, q, k, v, inplace=True, with_lse=True)  # (B, H, T, Dh), ...
        ctx.plan = plan
        ctx.save_for_backward(q, k, v, out, lse, lse_rows)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor):
        q, k, v, out, lse, lse_rows = ctx.saved_tensors
        return (*blocked_backward(ctx.plan, q, k, v, out, lse, lse_rows, d_out), None, None)


def blocked_backward(plan: BlockedPlan, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                     lse_rows: Optional[Tensor], d_out: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv (B, H, T, Dh) of the blocked forward, recomputed chunk by chunk from ``lse``.

    lse (B, H, T): log-sum-exp of each local row (``+inf`` where nothing is allowed);
    lse_rows (B, H, G) the same for the global rows, or None when G = 0.
    """
    B, H, T, Dh, b, BH, G = plan.B, plan.H, plan.T, plan.Dh, plan.b, plan.BH, plan.G
    acc = plan.acc
    dq = torch.empty(BH, T, Dh, dtype=acc, device=q.device)
    dk = torch.zeros(BH, T, Dh, dtype=acc, device=q.device)
    dv = torch.zeros(BH, T, Dh, dtype=acc, device=q.device)
    k_g, v_g = global_columns(plan, k, v)                                  # (B*H, G, Dh) or None
    dk_g = torch.zeros(BH, G, Dh, dtype=acc, device=q.device)
    dv_g = torch.zeros(BH, G, Dh, dtype=acc, device=q.device)
    lse_pad = torch.full((BH, plan.n_blocks * b), float("inf"), dtype=acc, device=q.device)
    lse_pad[:, :T] = lse.reshape(BH, T)                                    # (B*H, n_blocks*b)
    is_global = _global_positions(plan)                                    # (B, T) bool
    for n0, n1 in plan.chunks():
        chunk_backward(plan, q, k, v, out, d_out, lse_pad, is_global, k_g, v_g, n0, n1, dq, dk, dv, dk_g, dv_g)
    dq, dk, dv = (x.view(B, H, T, Dh) for x in (dq, dk, dv))
    if G:
        add_global_rows_grads(plan, q, k, v, out, d_out, lse_rows, dq, dk, dv)
        at = plan.idx[:, None, :, None].expand(B, H, G, Dh)                # invalid slots add exact zeros
        dk.scatter_add_(2, at, dk_g.view(B, H, G, Dh))                     # the global columns' keys
        dv.scatter_add_(2, at, dv_g.view(B, H, G, Dh))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _global_positions(plan: BlockedPlan) -> Tensor:
    """(B, T) bool: rows that are (valid) global tokens."""
    target = plan.idx.masked_fill(~plan.valid, plan.T)                     # invalid slots -> spare column T
    is_global = torch.zeros(plan.B, plan.T + 1, dtype=torch.bool, device=plan.idx.device)
    return is_global.scatter_(1, target, True)[:, :plan.T]


def chunk_backward(plan: BlockedPlan, q, k, v, out, d_out, lse_pad, is_global, k_g, v_g, n0: int, n1: int,
                   dq: Tensor, dk: Tensor, dv: Tensor, dk_g: Tensor, dv_g: Tensor) -> None:
    """One chunk of query blocks: writes its rows of dq, adds to dk, dv over its keys and to dk_g, dv_g."""
    B, H, T, Dh, b, BH, S, G, ns = plan.B, plan.H, plan.T, plan.Dh, plan.b, plan.BH, plan.S, plan.G, plan.ns
    n, t0 = n1 - n0, n0 * b
    M, acc = n * BH, plan.acc
    qb = query_blocks(plan, q, n0, n1)                                     # (M, b, Dh), times scale
    kb, vb = key_blocks(plan, k, n0, n1), key_blocks(plan, v, n0, n1)      # (n+ns-1, B*H, b, Dh)
    s, _ = chunk_scores(plan, qb, kb, k_g, n0, n1)                         # (M, b, S+G), -inf masked
    lse_c = lse_pad[:, t0:n1 * b].view(BH, n, b).transpose(0, 1).reshape(M, b)
    p = probs_from_lse(s, lse_c, inplace=True)                             # (M, b, S+G): P recomputed
    do = blocks(d_out, t0, n1 * b, b, acc)                                 # (n, B*H, b, Dh)
    if G:                                                                  # global rows: written over
        g_rows = edge_slice(is_global, t0, n1 * b, False).view(B, n, b).transpose(0, 1)  # (n, B, b)
        do.view(n, B, H, b, Dh).masked_fill_(g_rows[:, :, None, :, None], 0)
    do = do.view(M, b, Dh)
    D = (do * blocks(out, t0, n1 * b, b, acc).view(M, b, Dh)).sum(-1, keepdim=True)  # (M, b, 1)
    pieces = [torch.bmm(do, vb[j:j + n].view(M, b, Dh).transpose(1, 2)) for j in range(ns)]  # ns x (M, b, b)
    if G:
        pieces.append(torch.bmm(do, v_g.expand(n, -1, -1, -1).reshape(M, G, Dh).transpose(1, 2)))  # (M, b, G)
    ds = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]      # (M, b, S+G): dP
    del pieces
    ds = ds.sub_(D).mul_(p)                                                # dS = P * (dP - D)
    dq_c = torch.zeros(M, b, Dh, dtype=acc, device=q.device)
    dkb = torch.zeros_like(kb)                                             # (n+ns-1, B*H, b, Dh)
    dvb = torch.zeros_like(vb)
    for j in range(ns):
        cols = slice(j * b, (j + 1) * b)
        dq_c.baddbmm_(ds[:, :, cols], kb[j:j + n].view(M, b, Dh))         # dS K
        dkb[j:j + n].view(M, b, Dh).baddbmm_(ds[:, :, cols].transpose(1, 2), qb)  # dS^T (scale q)
        dvb[j:j + n].view(M, b, Dh).baddbmm_(p[:, :, cols].transpose(1, 2), do)   # P^T dO
    if G:
        dq_c.baddbmm_(ds[:, :, S:], k_g.expand(n, -1, -1, -1).reshape(M, G, Dh))
        dk_g += torch.bmm(ds[:, :, S:].transpose(1, 2), qb).view(n, BH, G, Dh).sum(0)  # (B*H, G, Dh)
        dv_g += torch.bmm(p[:, :, S:].transpose(1, 2), do).view(n, BH, G, Dh).sum(0)
    t1 = min(n1 * b, T)
    dq[:, t0:t1] = dq_c.mul_(plan.scale).view(n, BH, b, Dh).transpose(0, 1).reshape(BH, n * b, Dh)[:, :t1 - t0]
    lo, hi = plan.key_range(n0, n1)
    a, z = max(lo, 0), min(hi, T)                                          # keys inside the sequence
    dk[:, a:z] += dkb.transpose(0, 1).reshape(BH, hi - lo, Dh)[:, a - lo:z - lo]
    dv[:, a:z] += dvb.transpose(0, 1).reshape(BH, hi - lo, Dh)[:, a - lo:z - lo]


def add_global_rows_grads(plan: BlockedPlan, q, k, v, out, d_out, lse_rows, dq: Tensor, dk: Tensor, dv: Tensor) -> None:
    """The G x T pass of the global rows (:func:`.global_rows.global_rows_backward`): adds to dq at
    their rows and to dk, dv of every key."""
    B, H, Dh, G, idx = plan.B, plan.H, plan.Dh, plan.G, plan.idx
    dqg, _, _ = global_rows_backward(
        gather_tokens(q, idx), k, v, idx, plan.valid, plan.key_padding_mask, plan.causal, plan.scale, plan.acc,
        lse_rows, gather_tokens(out, idx), gather_tokens(d_out, idx), dk=dk, dv=dv)  # (B, H, G, Dh); dk, dv += in place
    dq.scatter_add_(2, idx[:, None, :, None].expand(B, H, G, Dh), dqg)    # invalid slots add exact zeros
