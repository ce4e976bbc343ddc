"""FlexAttention ``BlockMask``s for the hybrid rule: the ``global_first`` layout, built in O(T), cached.

FlexAttention cuts the (T_all x T_all) problem into 128 x 128 tiles and skips every tile its ``BlockMask``
marks empty; a *partial* tile evaluates the ``mask_mod`` per element, a *full* tile needs no mask.
The rule has one source, :func:`tutor.masks.hybrid_mask_mod`; here its unchecked form
:func:`tutor.masks.hybrid_rule`, since the door checked the arguments.

Global tokens would spoil the sparsity if left in place: a global query makes its whole row of
tiles non-empty, and each global key lights up one tile in *every* row, where it is 1 useful
column out of 128. So the ``global_first`` layout gathers the G global tokens (padded to ``Gp``,
a multiple of 128) in front of the sequence: the global rows become one dense row of tiles, the
global keys one column of tiles, and the rest stays a thin band. A global token keeps its
original slot too, but masked there, so each (query, key) pair is counted once.

``dilation=d`` widens the band to ``w*d`` (same tiles, sparser inside); a ``pattern`` (any
mask_mod, e.g. from :mod:`tutor.patterns`) is not band-limited, so its block mask evaluates the
full tile grid, O(T^2) once per cached plan (fine at the course's sizes).

Only the tiles that *can* be non-empty (the band, the global row and column) are evaluated with
the ``mask_mod``; a test checks the result against ``create_block_mask``, which evaluates all
T_all x T_all pairs. ``T_all`` is the length of the flex problem: ``Gp + T`` in the ``global_first``
layout (the Gp global slots prepended to the T tokens), ``T`` in place. Plans are cached per (shape, window, causal, dilation, pattern identity, device,
mask contents).
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..masks import MaskMod, hybrid_rule
from .global_tokens import global_slots

BLOCK = 128                   #: FlexAttention's tile size (queries x keys)
CACHE_SIZE = 32               #: plans kept (least recently used goes first)
_PAIRS_PER_STEP = 1 << 24     #: mask elements evaluated at once while building a block mask
_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()


def global_first_mask_mod(window: int, global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                          idx: Tensor, valid: Tensor, Gp: int, *, causal: bool = False,
                          dilation: int = 1, pattern: Optional[MaskMod] = None) -> MaskMod:
    """The hybrid rule on the ``[Gp global slots | T tokens]`` layout.

    Slot ``s < Gp`` stands for token ``idx[batch, s]`` (if ``valid``); slot ``Gp + t`` for token ``t``,
    masked when ``t`` is global (it already sits in front). ``hybrid_mask_mod`` decides the rest.
    """
    rule = hybrid_rule(window, global_mask, key_padding_mask, causal, dilation, pattern)  # checked at the door
    if Gp == 0:
        return rule
    G = idx.shape[1]
    idx_p = torch.zeros(idx.shape[0], Gp, dtype=idx.dtype, device=idx.device)
    idx_p[:, :G] = idx
    valid_p = torch.zeros(idx.shape[0], Gp, dtype=torch.bool, device=idx.device)
    valid_p[:, :G] = valid

    def token(batch, slot):
        front = slot < Gp
        pos = torch.where(front, idx_p[batch, slot.clamp(max=Gp - 1)], (slot - Gp).clamp(min=0))
        ok = torch.where(front, valid_p[batch, slot.clamp(max=Gp - 1)], ~global_mask[batch, pos])
        return pos, ok

    def global_first(batch, head, q_idx, kv_idx):
        q_pos, q_ok = token(batch, q_idx)
        k_pos, k_ok = token(batch, kv_idx)
        return q_ok & k_ok & rule(batch, head, q_pos, k_pos)
    global_first.__name__ = f"global_first({rule.__name__})"
    return global_first


def candidate_tiles(n_blocks: int, window: int, causal: bool, dense_rows: Tensor, dense_cols: Tensor) -> Tensor:
    """Tiles that may hold an allowed pair: the band of half-width w, plus the given rows/columns.

    ``dense_rows``, ``dense_cols``: (n_blocks,) bool. Returns (n_blocks, n_blocks) bool.
    """
    dev = dense_rows.device
    m = torch.arange(n_blocks, device=dev)
    first = (m * BLOCK - window).clamp(min=0) // BLOCK                     # first key tile of row m
    last = ((m + 1) * BLOCK - 1 + (0 if causal else window)) // BLOCK      # last key tile of row m
    band = (m[None, :] >= first[:, None]) & (m[None, :] <= last[:, None])  # (n, n)
    return band | dense_rows[:, None] | dense_cols[None, :]


def block_mask_from_tiles(mask_mod: MaskMod, B: int, T_all: int, tiles: Tensor):
    """A ``BlockMask`` for a (T_all x T_all) problem, evaluating ``mask_mod`` only on candidate ``tiles``.

    ``tiles``: (nb, nb) bool, True where a tile may be non-empty (everything else must be empty).
    Each candidate tile becomes empty, partial or full by what ``mask_mod`` says inside it.
    """
    from torch.nn.attention.flex_attention import BlockMask
    dev = tiles.device
    nb = tiles.shape[0]
    pairs = tiles.nonzero()                                                # (P, 2) tile coordinates
    partial = torch.zeros(B, nb, nb, dtype=torch.bool, device=dev)
    full = torch.zeros(B, nb, nb, dtype=torch.bool, device=dev)
    offs = torch.arange(BLOCK, device=dev)                                 # positions inside a tile
    batch = torch.arange(B, device=dev)[:, None, None, None]               # (B, 1, 1, 1)
    head = torch.zeros((), dtype=torch.long, device=dev)
    step = max(1, _PAIRS_PER_STEP // (B * BLOCK * BLOCK))
    for p0 in range(0, pairs.shape[0], step):
        pq, pk = pairs[p0:p0 + step, 0], pairs[p0:p0 + step, 1]           # (p,)
        qi = (pq[:, None] * BLOCK + offs)[:, :, None]                      # (p, BLOCK, 1)
        ki = (pk[:, None] * BLOCK + offs)[:, None, :]                      # (p, 1, BLOCK)
        inside = (qi < T_all) & (ki < T_all)                               # (p, BLOCK, BLOCK)
        qc, kc = qi.clamp(max=T_all - 1)[None], ki.clamp(max=T_all - 1)[None]
        m = mask_mod(batch, head, qc, kc) & inside                         # (B, p, BLOCK, BLOCK)
        any_ = m.flatten(2).any(-1)                                        # (B, p)
        all_ = m.flatten(2).all(-1)                                        # (B, p)
        partial[:, pq, pk] = any_ & ~all_
        full[:, pq, pk] = all_

    def ordered(dense: Tensor) -> Tuple[Tensor, Tensor]:
        num = dense.sum(-1).to(torch.int32)[:, None]                       # (B, 1, nb)
        order = torch.argsort((~dense).to(torch.int8), dim=-1, stable=True)  # selected tiles first
        return num, order.to(torch.int32)[:, None]                         # (B, 1, nb, nb)

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(T_all, T_all))


def _digest(mask: Optional[Tensor]) -> str:
    if mask is None:
        return "-"
    return hashlib.blake2b(mask.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()


def flex_plan(B: int, T: int, window: int, global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
              causal: bool, device, layout: str = "global_first", *, dilation: int = 1,
              pattern: Optional[MaskMod] = None):
    """(block_mask, idx, valid, Gp) for these masks, cached. idx, valid: (B, G) global slots.

    ``dilation`` / ``pattern`` as in :func:`tutor.masks.hybrid_mask`; the arguments come checked
    (:func:`tutor.attention.call.attention_call`). The cache key holds the pattern object itself:
    compared by identity, and kept alive so its id is never reused.

    ``layout="global_first"``: the backend's layout (see the module docstring).
    ``layout="in_place"``: ``hybrid_mask_mod`` on the original positions, as a user would first
    write it; kept as the baseline the benchmark compares with.
    """
    if layout not in ("global_first", "in_place"):
        raise ValueError(f"layout must be 'global_first' or 'in_place', got {layout!r}")
    key = (B, T, window, causal, dilation, pattern, str(device), layout,
           _digest(global_mask), _digest(key_padding_mask))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    # private copies: the cached mask_mod must not see later in-place edits of the caller's masks
    global_mask, key_padding_mask = (None if m is None else m.clone() for m in (global_mask, key_padding_mask))
    idx, valid = global_slots(global_mask, key_padding_mask, B, T, device)  # (B, G), (B, G)
    G = idx.shape[1]
    if layout == "global_first":
        Gp = math.ceil(G / BLOCK) * BLOCK
        T_all = Gp + T                                                     # the Gp global slots, then the T tokens
        mod = global_first_mask_mod(window, global_mask, key_padding_mask, idx, valid, Gp, causal=causal,
                                    dilation=dilation, pattern=pattern)
        nb = math.ceil(T_all / BLOCK)
        lines = torch.arange(nb, device=device) < Gp // BLOCK              # the front tiles
        tiles = candidate_tiles(nb, window * dilation, causal, lines, lines)
    else:
        Gp, T_all = 0, T
        mod = hybrid_rule(window, global_mask, key_padding_mask, causal, dilation, pattern)  # checked at the door
        nb = math.ceil(T_all / BLOCK)
        has = torch.zeros(nb, dtype=torch.bool, device=device)
        has[idx[valid] // BLOCK] = True                                    # tiles holding a global token
        tiles = candidate_tiles(nb, window * dilation, causal, has, has)
    if pattern is not None:                                                # not band-limited: every tile
        tiles = torch.ones_like(tiles)
    plan = (block_mask_from_tiles(mod, B, T_all, tiles), idx, valid, Gp)
    _CACHE[key] = plan
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan
