"""The halo: the keys within ``w`` of a shard that live on other ranks, and the exchange that moves them.

Rank ``r`` holds positions ``[start_r, end_r)``. Its queries read keys in ``[start_r - w, end_r + w)``
(only ``[start_r - w, end_r)`` when causal), clipped to ``[0, T)``. :func:`halo_plan` says which
slice of which rank that is: when ``w`` is longer than a shard the halo reaches several ranks, and
only those. :class:`HaloExchange` moves the slices with ``torch.distributed.batch_isend_irecv``; its
backward sends the gradients of the borrowed rows back to their owners, who add them up.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from . import traffic

__all__ = ["Piece", "halo_plan", "halo_pieces", "HaloExchange", "halo_exchange"]


class Piece(NamedTuple):
    """Rows ``[lo, hi)`` (local to ``src``'s shard) that ``src`` sends to ``dst``."""
    src: int
    dst: int
    lo: int
    hi: int


def halo_pieces(bounds: Sequence[Tuple[int, int]], dst: int, window: int, causal: bool = False) -> List[Piece]:
    """The pieces rank ``dst`` needs from the other ranks, in position order (left halo, right halo)."""
    T = bounds[-1][1]
    start, end = bounds[dst]
    need = [(max(0, start - window), start)] + ([] if causal else [(end, min(T, end + window))])
    pieces = []
    for a, b in need:
        for src, (s, e) in enumerate(bounds):
            lo, hi = max(a, s), min(b, e)
            if src != dst and lo < hi:
                pieces.append(Piece(src, dst, lo - s, hi - s))
    return pieces


def halo_plan(bounds: Sequence[Tuple[int, int]], window: int, causal: bool = False) -> List[Piece]:
    """Every piece that moves in one halo exchange, over all ranks."""
    return [p for dst in range(len(bounds)) for p in halo_pieces(bounds, dst, window, causal)]


def _peer(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def _exchange(sends: List[Tuple[int, Tensor]], recvs: List[Tuple[int, Tensor]], group, kind: str) -> None:
    """Post every send and receive at once (``batch_isend_irecv``) and wait for all of them."""
    ops = [dist.P2POp(dist.isend, t.contiguous(), _peer(group, peer), group) for peer, t in sends]
    ops += [dist.P2POp(dist.irecv, t, _peer(group, peer), group) for peer, t in recvs]
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    traffic.record(kind, sum(t.numel() * t.element_size() for _, t in sends))


class HaloExchange(torch.autograd.Function):
    """x (B, H, T_r, C) -> the halo rows this rank borrows (B, H, n_left + n_right, C), in position order.

    Backward: the gradient of each borrowed piece goes back to its owner and is added at its rows.
    """

    @staticmethod
    def forward(ctx, x: Tensor, plan: List[Piece], rank: int, group) -> Tensor:
        ctx.plan, ctx.rank, ctx.group, ctx.shape = plan, rank, group, x.shape
        B, H, _, C = x.shape
        mine = [p for p in plan if p.dst == rank]
        bufs = [x.new_empty(B, H, p.hi - p.lo, C) for p in mine]
        sends = [(p.dst, x[:, :, p.lo:p.hi]) for p in plan if p.src == rank]
        _exchange(sends, [(p.src, buf) for p, buf in zip(mine, bufs)], group, "halo")
        return torch.cat(bufs, dim=2) if bufs else x.new_empty(B, H, 0, C)   # (B, H, n_halo, C)

    @staticmethod
    def backward(ctx, grad: Tensor):
        plan, rank, group = ctx.plan, ctx.rank, ctx.group
        B, H, T_r, C = ctx.shape
        mine = [p for p in plan if p.dst == rank]
        sizes = [p.hi - p.lo for p in mine]
        back = list(zip([p.src for p in mine], grad.split(sizes, dim=2)))  # gradients of borrowed rows
        lent = [p for p in plan if p.src == rank]
        bufs = [grad.new_empty(B, H, p.hi - p.lo, C) for p in lent]
        _exchange(back, [(p.dst, buf) for p, buf in zip(lent, bufs)], group, "halo backward")
        gx = grad.new_zeros(B, H, T_r, C)                                   # (B, H, T_r, C)
        for p, buf in zip(lent, bufs):
            gx[:, :, p.lo:p.hi] += buf
        return gx, None, None, None


def halo_exchange(x: Tensor, plan: List[Piece], rank: int, group=None) -> Tensor:
    """Differentiable halo exchange of x (B, H, T_r, C): see :class:`HaloExchange`."""
    return HaloExchange.apply(x, plan, rank, group)
