"""Global rows across ranks: partial softmax states and their log-sum-exp merge.

A global query reads all ``T`` keys, but each rank holds only ``T_r`` of them. Softmax over the
union can still be computed piece by piece: each rank keeps, per row, the *state*

    m = max_j s_j,   l = sum_j exp(s_j - m),   o = sum_j exp(s_j - m) v_j      (j: its allowed keys)

and two states merge exactly: with ``M = max(m_1, m_2)``,

    l = l_1 e^(m_1 - M) + l_2 e^(m_2 - M),   o = o_1 e^(m_1 - M) + o_2 e^(m_2 - M),   out = o / l.

Across ``P`` ranks that is an all-reduce MAX of ``m`` followed by an all-reduce SUM of the
rescaled ``l`` and ``o`` (differentiable, :mod:`.collectives`). ``m``
only shifts the exponent, which cancels in ``o / l``, so it is taken without gradient.

The state, its merge and a rank's partial global rows are the attention package's
(:mod:`tutor.attention.global_rows`: ``partial_state``, ``merge_states``, ``finish``,
``global_rows_partial``); this module adds the merge across ranks.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..attention.global_rows import SoftmaxState, finish, merge_states, partial_state, rescale_state
from . import traffic
from .collectives import all_reduce_sum

__all__ = ["SoftmaxState", "partial_state", "merge_states", "finish", "all_reduce_states"]


def all_reduce_states(state: SoftmaxState, group=None) -> SoftmaxState:
    """Merge one state per rank into the state over all ranks' keys; every rank gets the result.

    :func:`merge_states` over the ranks, as collectives: the max ``M`` first, then each rank's
    state rescaled to it (:func:`rescale_state`) and summed.
    """
    world = dist.get_world_size(group)
    M = state.m.clone()
    dist.all_reduce(M, op=dist.ReduceOp.MAX, group=group)                     # (..., G, 1), no gradient
    local = rescale_state(state, M)
    lo = torch.cat([local.l, local.o], dim=-1)                                # (..., G, 1 + Dh)
    total = all_reduce_sum(lo, group)     # (..., G, 1 + Dh)
    traffic.record_all_reduce("merge", (M.numel() + lo.numel()) * lo.element_size(), world)
    return SoftmaxState(M, total[..., :1], total[..., 1:])
