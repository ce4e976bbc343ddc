"""Cutting a sequence into contiguous shards, one per rank, and putting it back together.

Rank ``r`` of ``P`` holds positions ``[start_r, end_r)``; rank 0 holds the first ones. Shards may
have different lengths (``T`` need not be divisible by ``P``): :func:`shard_bounds` follows
``torch.tensor_split``, so the first ``T % P`` ranks hold one position more.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["shard_bounds", "bounds_from_lengths", "shard_sequence", "gather_sequence"]


def shard_bounds(T: int, world_size: int) -> List[Tuple[int, int]]:
    """``[(start_r, end_r)]`` for each rank: contiguous, in rank order, lengths differ by at most 1."""
    if T < 0 or world_size < 1:
        raise ValueError(f"need T >= 0 and world_size >= 1, got T={T}, world_size={world_size}")
    base, extra = divmod(T, world_size)
    return bounds_from_lengths([base + (r < extra) for r in range(world_size)])


def bounds_from_lengths(lengths: Sequence[int]) -> List[Tuple[int, int]]:
    """Shard lengths ``[T_0, T_1, ...]`` -> ``[(start_r, end_r)]`` (prefix sums)."""
    bounds, start = [], 0
    for n in lengths:
        bounds.append((start, start + int(n)))
        start += int(n)
    return bounds


def shard_sequence(x: Optional[Tensor], rank: int, world_size: int, dim: int) -> Optional[Tensor]:
    """This rank's contiguous shard of ``x`` along ``dim`` (the sequence axis); None stays None.

    q, k, v (B, H, T, Dh) use ``dim=2``, masks (B, T) and activations (B, T, D) use ``dim=1``.
    """
    if x is None:
        return None
    start, end = shard_bounds(x.shape[dim], world_size)[rank]
    return x.narrow(dim, start, end - start)


def gather_sequence(shard: Tensor, dim: int, group=None) -> Tensor:
    """All-gather the shards of every rank along ``dim`` into the whole sequence (for checking).

    Shards may differ in length along ``dim`` (all other sizes must agree): lengths are
    all-gathered first, shards are padded to the longest and cut again. Not differentiable.
    """
    world = dist.get_world_size(group)
    n = torch.tensor([shard.shape[dim]], device=shard.device)
    lengths = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(lengths, n, group=group)
    longest = max(int(t) for t in lengths)
    pad = list(shard.shape)
    pad[dim] = longest - shard.shape[dim]
    padded = torch.cat([shard.detach(), shard.new_zeros(pad)], dim=dim).contiguous()
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded, group=group)
    return torch.cat([p.narrow(dim, 0, int(t)) for p, t in zip(pieces, lengths)], dim=dim)
