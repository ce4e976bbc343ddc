"""Global tokens across ranks: every rank learns every global token's position, q, k and v.

A global token is read by every query and reads every key, wherever it sits, so each rank needs
all of them. Each rank packs its own (``G_r`` of them, padded to the largest count ``G`` of any
rank, invalid slots flagged) and all-gathers them: ``P · G`` slots in rank order. The q/k/v
gather is differentiable (:mod:`.collectives`): its backward sums the gradients
that every rank computed for a slot and hands them to the slot's owner.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from ..attention.global_tokens import gather_tokens, global_slots
from . import traffic
from .collectives import all_gather

__all__ = ["GlobalTokens", "local_global_slots", "gather_globals"]


class GlobalTokens(NamedTuple):
    """All global tokens of the sequence: ``P · G`` slots, rank r's at ``[r·G, (r+1)·G)``."""
    pos: Tensor     # (B, P·G) long: position in the whole sequence (-1 for an invalid slot)
    valid: Tensor   # (B, P·G) bool
    q: Tensor       # (B, H, P·G, Dh)
    k: Tensor       # (B, H, P·G, Dh)
    v: Tensor       # (B, H, P·G, Dh)


def local_global_slots(global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], B: int, T_r: int,
                       device, G: Optional[int] = None):
    """This shard's global tokens that count (not padding): ``idx, valid`` (B, G), padded to ``G`` slots."""
    idx, valid = global_slots(global_mask, key_padding_mask, B, T_r, device)   # (B, G_r), (B, G_r)
    if G is not None and G > idx.shape[1]:
        extra = G - idx.shape[1]
        idx = torch.cat([idx, idx.new_zeros(B, extra)], dim=1)                 # (B, G)
        valid = torch.cat([valid, valid.new_zeros(B, extra)], dim=1)           # (B, G)
    return idx, valid


def gather_globals(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, valid: Tensor, start: int, group=None) -> GlobalTokens:
    """All-gather every rank's global tokens. q, k, v: (B, H, T_r, Dh); idx, valid: (B, G) local slots."""
    world = dist.get_world_size(group)
    Dh = q.shape[-1]
    pos = (idx + start).masked_fill(~valid, -1)                                 # (B, G)
    pos_all = [torch.empty_like(pos) for _ in range(world)]
    dist.all_gather(pos_all, pos, group=group)
    pos_all = torch.cat(pos_all, dim=1)                                         # (B, P·G)
    qkv = torch.cat([gather_tokens(t, idx) for t in (q, k, v)], dim=-1)        # (B, H, G, 3Dh), only G rows copied
    qkv_all = all_gather(qkv, group)                                           # (P, B, H, G, 3Dh)
    qkv_all = qkv_all.permute(1, 2, 0, 3, 4).flatten(2, 3)                     # (B, H, P·G, 3Dh)
    traffic.record_all_gather("globals", qkv.numel() * qkv.element_size() + pos.numel() * 8, world)
    qg, kg, vg = qkv_all.split(Dh, dim=-1)                                      # 3 x (B, H, P·G, Dh)
    return GlobalTokens(pos_all, pos_all >= 0, qg, kg, vg)
