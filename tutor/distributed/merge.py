"""Global rows across ranks: partial softmax states and their log-sum-exp merge.

A global query reads all ``T`` keys, but each rank holds only ``T_r`` of them. Softmax over the
union can still be computed piece by piece: each rank keeps, per row, the *state*

    m = max_j s_j,   l = sum_j exp(s_j - m),   o = sum_j exp(s_j - m) v_j      (j: its allowed keys)

and two states merge exactly: with ``M = max(m_1, m_2)``,

    l = l_1 e^(m_1 - M) + l_2 e^(m_2 - M),   o = o_1 e^(m_1 - M) + o_2 e^(m_2 - M),   out = o / l.

Across ``P`` ranks that is an all-reduce MAX of ``m`` followed by an all-reduce SUM of the
rescaled ``l`` and ``o`` (differentiable, :mod:`.collectives`). ``m``
only shifts the exponent, which cancels in ``o / l``, so it is taken without gradient.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..attention.softmax import accum_dtype
from . import traffic
from .collectives import all_reduce_sum

__all__ = ["SoftmaxState", "partial_state", "merge_states", "finish", "all_reduce_states"]


class SoftmaxState(NamedTuple):
    """Partial softmax of some rows over some keys: m, l (..., 1) and o (..., Dh), in float32 (float64 for float64 input)."""
    m: Tensor   # running max of the scores, -inf where no key was allowed
    l: Tensor   # sum of exp(s - m)
    o: Tensor   # sum of exp(s - m) · v  (unnormalised output)


def partial_state(scores: Tensor, allowed: Tensor, v: Tensor) -> SoftmaxState:
    """State of rows ``scores`` (..., G, n) over n keys ``v`` (..., n, Dh); ``allowed`` broadcasts."""
    acc = accum_dtype(scores.dtype)
    s = scores.to(acc).masked_fill(~allowed, float("-inf"))                  # (..., G, n)
    m = s.amax(dim=-1, keepdim=True).detach()                                 # (..., G, 1)
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - shift)                                                  # (..., G, n), 0 where not allowed
    return SoftmaxState(m, p.sum(dim=-1, keepdim=True), p @ v.to(acc))        # (..., G, 1), (..., G, 1), (..., G, Dh)


def _rescale(state: SoftmaxState, M: Tensor) -> SoftmaxState:
    """Express a state relative to a larger max M (a state with no key contributes 0)."""
    factor = torch.where(torch.isfinite(state.m), torch.exp(state.m - torch.where(torch.isfinite(M), M, 0.0)), 0.0)
    return SoftmaxState(M, state.l * factor, state.o * factor)


def merge_states(a: SoftmaxState, b: SoftmaxState) -> SoftmaxState:
    """The state over the keys of both ``a`` and ``b`` (the log-sum-exp merge)."""
    M = torch.maximum(a.m, b.m)
    a, b = _rescale(a, M), _rescale(b, M)
    return SoftmaxState(M, a.l + b.l, a.o + b.o)


def finish(state: SoftmaxState) -> Tensor:
    """Softmax output ``o / l`` (..., G, Dh); rows without any allowed key give zeros, not NaN."""
    return state.o / torch.where(state.l > 0, state.l, torch.ones_like(state.l))


def all_reduce_states(state: SoftmaxState, group=None) -> SoftmaxState:
    """Merge one state per rank into the state over all ranks' keys; every rank gets the result."""
    world = dist.get_world_size(group)
    M = state.m.clone()
    dist.all_reduce(M, op=dist.ReduceOp.MAX, group=group)                     # (..., G, 1), no gradient
    local = _rescale(state, M)
    lo = torch.cat([local.l, local.o], dim=-1)                                # (..., G, 1 + Dh)
    total = all_reduce_sum(lo, group)     # (..., G, 1 + Dh)
    traffic.record_all_reduce("merge", (M.numel() + lo.numel()) * lo.element_size(), world)
    return SoftmaxState(M, total[..., :1], total[..., 1:])
