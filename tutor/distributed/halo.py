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

__all__ = ["Piece", "halo_plan", "halo_rows", "halo_pieces", "HaloExchange", "halo_exchange"]


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



def halo_rows(T: int, world_size: int, window: int, causal: bool = False) -> int:
    """Most K/V rows one rank sends in a halo exchange of shards of ``T / P`` positions."""
    from .sharding import shard_bounds
    plan = halo_plan(shard_bounds(T, world_size), window, causal)
    return max(sum(p.hi - p.lo for p in plan if p.src == r) for r in range(world_size))

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
    """Tensors x (B, *, T_r, *) -> the halo rows this rank borrows of each, (B, *, n_left + n_right, *),
    in position order. All tensors travel in one ``batch_isend_irecv``.

    Backward: the gradient of each borrowed piece goes back to its owner and is added at its rows
    (for the tensors that need a gradient; a bool/int mask needs none).
    """

    @staticmethod
    def forward(ctx, plan: List[Piece], rank: int, group, *xs: Tensor):
        ctx.plan, ctx.rank, ctx.group, ctx.shapes = plan, rank, group, [x.shape for x in xs]
        mine = [p for p in plan if p.dst == rank]
        sends = [(p.dst, x[:, :, p.lo:p.hi]) for p in plan if p.src == rank for x in xs]
        bufs = [[x.new_empty(x.shape[0], x.shape[1], p.hi - p.lo, x.shape[3]) for p in mine] for x in xs]
        recvs = [(p.src, bufs[i][n]) for n, p in enumerate(mine) for i in range(len(xs))]
        _exchange(sends, recvs, group, "halo")
        return tuple(torch.cat(b, dim=2) if b else x[:, :, :0].clone() for x, b in zip(xs, bufs))

    @staticmethod
    def backward(ctx, *grads: Tensor):
        plan, rank = ctx.plan, ctx.rank
        which = [i for i, need in enumerate(ctx.needs_input_grad[3:]) if need]
        mine = [p for p in plan if p.dst == rank]
        lent = [p for p in plan if p.src == rank]
        sizes = [p.hi - p.lo for p in mine]
        pieces = {i: grads[i].split(sizes, dim=2) for i in which}          # gradients of borrowed rows
        back = [(p.src, pieces[i][n]) for n, p in enumerate(mine) for i in which]
        gxs = {i: grads[i].new_zeros(ctx.shapes[i]) for i in which}        # (B, *, T_r, *)
        bufs = [[gxs[i].new_empty(*ctx.shapes[i][:2], p.hi - p.lo, ctx.shapes[i][3]) for p in lent] for i in which]
        recvs = [(p.dst, bufs[j][n]) for n, p in enumerate(lent) for j in range(len(which))]
        _exchange(back, recvs, ctx.group, "halo backward")
        for j, i in enumerate(which):
            for p, buf in zip(lent, bufs[j]):
                gxs[i][:, :, p.lo:p.hi] += buf
        return (None, None, None) + tuple(gxs.get(i) for i in range(len(grads)))


def halo_exchange(plan: List[Piece], rank: int, group, *xs: Tensor) -> Tuple[Tensor, ...]:
    """Differentiable halo exchange of tensors (B, *, T_r, *): see :class:`HaloExchange`."""
    return HaloExchange.apply(plan, rank, group, *xs)
