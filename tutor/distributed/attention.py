"""``sequence_parallel_attention``: hybrid attention over a sequence sharded across ranks.

Each rank holds a contiguous shard ``[start, end)`` of q, k, v and returns its shard of exactly
what :func:`tutor.attention.hybrid_attention` returns on the whole sequence. Four steps:

1. **layout** (:mod:`.layout`): all ranks exchange shard lengths and check that the shards fit.
2. **globals** (:mod:`.global_keys`): every global token's position, q, k, v are all-gathered.
3. **local rows**: the halo (:mod:`.halo`) brings K/V from ``[start - w, end + w)``; the global keys
   that lie outside it go in front, and ``hybrid_attention`` (memory-linear) runs on this
   *extended* sequence. A global key inside the halo stays where it is (counted once).
4. **global rows** (:mod:`.merge`): each rank's partial softmax state over its own keys, merged by
   all-reduce; the owner of a global token writes its row.

All transport is ``torch.distributed`` (gloo on CPU, NCCL on GPU); gradients flow back across ranks.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..attention import hybrid_attention
from ..attention.global_rows import global_rows_partial
from ..attention.global_tokens import global_slots
from ..attention.softmax import accum_dtype
from .global_keys import GlobalTokens, gather_globals, local_global_slots
from .halo import halo_exchange, halo_pieces, halo_plan
from .layout import exchange_layout
from .merge import all_reduce_states, finish

__all__ = ["sequence_parallel_attention"]


def _local_rows(q: Tensor, k: Tensor, v: Tensor, kpm: Tensor, window: int, glob: Optional[GlobalTokens],
                layout, causal: bool, scale: float, group) -> Tensor:
    """Rows of this shard's queries over their window and the global keys: (B, H, T_r, Dh)."""
    B, H, T_r, Dh = q.shape
    plan = halo_plan(layout.bounds, window, causal)
    mine = halo_pieces(layout.bounds, layout.rank, window, causal)
    n_left = sum(p.hi - p.lo for p in mine if p.src < layout.rank)
    n_right = sum(p.hi - p.lo for p in mine if p.src > layout.rank)
    k_halo, v_halo, pad_halo = halo_exchange(plan, layout.rank, group, k, v,
                                             kpm.to(torch.uint8)[:, None, :, None])   # (B, H|1, n_l + n_r, Dh|1)
    pad_halo = pad_halo[:, 0, :, 0].bool()                                            # (B, n_l + n_r)
    lo, hi = layout.start - n_left, layout.end + n_right                              # keys [lo, hi) are here
    L = hi - lo
    gm_chunk = torch.zeros(B, L + 1, dtype=torch.bool, device=q.device)               # spare slot L
    if glob is None:
        front_k = front_v = q.new_zeros(B, H, 0, Dh)
        front_use = torch.zeros(B, 0, dtype=torch.bool, device=q.device)
    else:
        inside = glob.valid & (glob.pos >= lo) & (glob.pos < hi)                      # (B, P·G)
        gm_chunk.scatter_(1, torch.where(inside, glob.pos - lo, L), True)
        front_use = glob.valid & ~inside & ((glob.pos < lo) | (not causal))           # (B, P·G)
        front_k, front_v = glob.k, glob.v                                             # (B, H, P·G, Dh)
    F = front_use.shape[1]
    # the extended sequence: [global keys from outside | left halo | own shard | right halo]
    k_ext = torch.cat([front_k, k_halo[:, :, :n_left], k, k_halo[:, :, n_left:]], dim=2)   # (B, H, F + L, Dh)
    v_ext = torch.cat([front_v, v_halo[:, :, :n_left], v, v_halo[:, :, n_left:]], dim=2)   # (B, H, F + L, Dh)
    q_ext = torch.cat([q.new_zeros(B, H, F + n_left, Dh), q, q.new_zeros(B, H, n_right, Dh)], dim=2)
    gm_ext = torch.cat([front_use, gm_chunk[:, :L]], dim=1)                           # (B, F + L)
    pad_ext = torch.cat([~front_use, pad_halo[:, :n_left], kpm, pad_halo[:, n_left:]], dim=1)  # (B, F + L)
    out_ext = hybrid_attention(q_ext, k_ext, v_ext, window, gm_ext, pad_ext, causal=causal, scale=scale)
    return out_ext[:, :, F + n_left:F + n_left + T_r]                                 # (B, H, T_r, Dh)


def _global_rows(k: Tensor, v: Tensor, kpm: Tensor, glob: GlobalTokens, start: int, causal: bool,
                 scale: float, group) -> Tensor:
    """Every global query's output over all T keys, merged across ranks: (B, H, P·G, Dh) in the accumulation dtype."""
    key_pos = start + torch.arange(k.shape[2], device=k.device)                        # (T_r,) this rank's keys
    state = global_rows_partial(glob.q, k, v, glob.pos, glob.valid, kpm, causal, scale, accum_dtype(k.dtype),
                                key_pos)                                                # over this rank's keys
    return finish(all_reduce_states(state, group))                                     # (B, H, P·G, Dh)


def _write_rows(out: Tensor, idx: Tensor, valid: Tensor, rows: Tensor) -> Tensor:
    """Out-of-place: rows ``idx`` (B, G) of out (B, H, T_r, Dh) replaced by rows (B, H, G, Dh) where valid.

    One copy of ``out`` (``index_put``), where ``scatter_rows`` would pad and scatter (two).
    """
    b, g = valid.nonzero(as_tuple=True)                                            # (n,), (n,)
    values = rows.transpose(1, 2)[b, g].to(out.dtype)                              # (n, H, Dh)
    return out.transpose(1, 2).index_put((b, idx[b, g]), values).transpose(1, 2)   # (B, H, T_r, Dh)


def sequence_parallel_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                                global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                                causal: bool = False, scale: Optional[float] = None, group=None) -> Tensor:
    """This rank's shard of ``hybrid_attention`` on the whole sequence (docs/spec.md), with autograd across ranks.

    q, k, v: (B, H, T_r, Dh), this rank's contiguous shard (rank 0 holds the first positions; shard
    lengths may differ, each T_r >= 1); global_mask, key_padding_mask: (B, T_r) bool or None.
    Every rank of ``group`` (None: the default process group) must call it with the same B, H,
    Dh, window, causal, scale and dtype; otherwise every rank raises the same ValueError.
    Returns (B, H, T_r, Dh) in q's dtype.
    """
    needs_grad = sum(bit * (torch.is_grad_enabled() and isinstance(t, Tensor) and t.requires_grad)
                     for bit, t in ((4, q), (2, k), (1, v)))        # the same backward on every rank

    def count_globals() -> int:
        idx, _ = global_slots(global_mask, key_padding_mask, q.shape[0], q.shape[2], q.device)
        return idx.shape[1]

    layout, window, causal, scale = exchange_layout(q, k, v, window, global_mask, key_padding_mask, causal, scale,
                                                    needs_grad, count_globals, group)
    B, H, T_r, Dh = q.shape
    kpm = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T_r, dtype=torch.bool, device=q.device)
    glob = None
    if layout.max_globals > 0:                      # the same decision on every rank
        idx, valid = local_global_slots(global_mask, key_padding_mask, B, T_r, q.device, layout.max_globals)
        glob = gather_globals(q, k, v, idx, valid, layout.start, group)
    out = _local_rows(q, k, v, kpm, window, glob, layout, causal, scale, group)   # (B, H, T_r, Dh)
    if glob is None:
        return out
    rows = _global_rows(k, v, kpm, glob, layout.start, causal, scale, group)     # (B, H, P·G, Dh)
    G = layout.max_globals
    own = rows[:, :, layout.rank * G:(layout.rank + 1) * G]                        # (B, H, G, Dh)
    return _write_rows(out, idx, valid, own)                                      # (B, H, T_r, Dh)
