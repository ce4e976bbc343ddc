"""FlexAttention backend: the SPEC.md rule as a ``mask_mod``, a sparse ``BlockMask``, one fused kernel.

``torch.nn.attention.flex_attention`` runs attention tile by tile (128 x 128) and skips every tile
its ``BlockMask`` marks empty; inside a *partial* tile it evaluates our ``mask_mod`` per element,
a *full* tile needs no mask at all. The rule has one source, :func:`tutor.masks.hybrid_mask_mod`.

Global tokens would spoil the sparsity if left in place: a global query makes its whole row of
tiles non-empty, and each global key lights up one tile in *every* row, where it is 1 useful
column out of 128. So the ``global_first`` layout gathers the G global tokens (padded to ``Gp``,
a multiple of 128) in front of the sequence: the global rows become one dense row of tiles, the
global keys one column of tiles, and the rest stays a thin band. A global token keeps its
original slot too, but masked there, so each (query, key) pair is counted once; the global rows
are read from the front and written back to their places. (Computing global rows separately
would need the softmax statistics that CPU flex cannot return in torch 2.13.)

``dilation=d`` widens the band to ``w*d`` (same tiles, sparser inside); a ``pattern`` (any
mask_mod, e.g. from :mod:`tutor.patterns`) is not band-limited, so its block mask evaluates the
full tile grid, O(T^2) once per cached plan (fine at the course's sizes).

The ``BlockMask`` is built in O(T): only the tiles that *can* be non-empty (the band, the
global row and column) are evaluated with the ``mask_mod``; a test checks the result against
``create_block_mask``, which evaluates all T x T pairs. Block masks are cached per
(shape, window, causal, dilation, pattern identity, device, mask contents).
"""
from __future__ import annotations

import hashlib
import math
import shutil
from collections import OrderedDict
from functools import lru_cache
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..masks import MaskMod, check_dilation, check_pattern, hybrid_mask_mod, pattern_batch
from ._checks import check_inputs, needs_grad
from .global_tokens import effective_globals, gather_tokens, global_index, scatter_rows

BLOCK = 128                   #: FlexAttention's tile size (queries x keys)
CACHE_SIZE = 32               #: block masks kept (least recently used goes first)
RECOMPILE_LIMIT = 64          #: compiled variants (shape x dtype x rule) allowed before dynamo gives up
_PAIRS_PER_STEP = 1 << 24     #: mask elements evaluated at once while building a block mask
_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()


def flex_why_not(q: Tensor, needs_grad: bool, return_weights: bool, dropout: bool = False) -> Optional[str]:
    """Why the flex backend cannot run these inputs (None when it can)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs torch >= 2.5)"
    if return_weights:
        return "FlexAttention never materializes the (T, T) weights; use return_weights=False"
    if dropout:
        return "FlexAttention has no attention dropout"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"FlexAttention supports float32, float16 and bfloat16, not {q.dtype}"
    if q.device.type == "cpu":
        if needs_grad:
            return (f"compiled FlexAttention on CPU is inference-only in torch {torch.__version__} "
                    "(no backward); run under torch.no_grad() or use backend='blocked'")
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"
        return None
    if q.device.type == "cuda":
        if q.shape[-1] < 16:
            return f"FlexAttention on CUDA needs Dh >= 16, got Dh={q.shape[-1]}"
        try:
            import triton  # noqa: F401  (torch.compile generates Triton kernels on CUDA)
        except ImportError:
            return "compiled FlexAttention on CUDA needs the triton package"
        return None
    return f"FlexAttention is not set up for device type {q.device.type!r} here"


@lru_cache(maxsize=1)
def compiled_flex():
    """``torch.compile(flex_attention)``, built once (the first call per shape compiles)."""
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def global_first_mask_mod(window: int, is_global: Optional[Tensor], key_padding_mask: Optional[Tensor],
                          idx: Tensor, valid: Tensor, Gp: int, *, causal: bool = False,
                          dilation: int = 1, pattern: Optional[MaskMod] = None) -> MaskMod:
    """The hybrid rule on the ``[Gp global slots | T tokens]`` layout.

    Slot ``s < Gp`` stands for token ``idx[b, s]`` (if ``valid``); slot ``Gp + t`` for token ``t``,
    masked when ``t`` is global (it already sits in front). ``hybrid_mask_mod`` decides the rest.
    """
    rule = hybrid_mask_mod(window, is_global, key_padding_mask, causal=causal, dilation=dilation, pattern=pattern)
    if Gp == 0:
        return rule
    G = idx.shape[1]
    idx_p = torch.zeros(idx.shape[0], Gp, dtype=idx.dtype, device=idx.device)
    idx_p[:, :G] = idx
    valid_p = torch.zeros(idx.shape[0], Gp, dtype=torch.bool, device=idx.device)
    valid_p[:, :G] = valid

    def token(b, slot):
        front = slot < Gp
        pos = torch.where(front, idx_p[b, slot.clamp(max=Gp - 1)], (slot - Gp).clamp(min=0))
        ok = torch.where(front, valid_p[b, slot.clamp(max=Gp - 1)], ~is_global[b, pos])
        return pos, ok

    def global_first(b, h, q_idx, kv_idx):
        q_pos, q_ok = token(b, q_idx)
        k_pos, k_ok = token(b, kv_idx)
        return q_ok & k_ok & rule(b, h, q_pos, k_pos)
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


def block_mask_from_tiles(mask_mod: MaskMod, B: int, S: int, tiles: Tensor):
    """A ``BlockMask`` for an (S x S) problem, evaluating ``mask_mod`` only on candidate ``tiles``.

    ``tiles``: (nb, nb) bool, True where a tile may be non-empty (everything else must be empty).
    Each candidate tile becomes empty, partial or full by what ``mask_mod`` says inside it.
    """
    from torch.nn.attention.flex_attention import BlockMask
    dev = tiles.device
    nb = tiles.shape[0]
    pairs = tiles.nonzero()                                                # (P, 2) tile coordinates
    partial = torch.zeros(B, nb, nb, dtype=torch.bool, device=dev)
    full = torch.zeros(B, nb, nb, dtype=torch.bool, device=dev)
    r = torch.arange(BLOCK, device=dev)
    b_idx = torch.arange(B, device=dev)[:, None, None, None]               # (B, 1, 1, 1)
    h_idx = torch.zeros((), dtype=torch.long, device=dev)
    step = max(1, _PAIRS_PER_STEP // (B * BLOCK * BLOCK))
    for p0 in range(0, pairs.shape[0], step):
        pq, pk = pairs[p0:p0 + step, 0], pairs[p0:p0 + step, 1]           # (p,)
        qi = (pq[:, None] * BLOCK + r)[:, :, None]                         # (p, BLOCK, 1)
        ki = (pk[:, None] * BLOCK + r)[:, None, :]                         # (p, 1, BLOCK)
        inside = (qi < S) & (ki < S)                                       # (p, BLOCK, BLOCK)
        m = mask_mod(b_idx, h_idx, qi.clamp(max=S - 1)[None], ki.clamp(max=S - 1)[None]) & inside  # (B, p, BLOCK, BLOCK)
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
                                    mask_mod=mask_mod, seq_lengths=(S, S))


def tile_states(block_mask, b: int = 0) -> Tensor:
    """Tile grid of batch element ``b``: (n_q_tiles, n_kv_tiles) int8, 0 empty, 1 partial, 2 full."""
    def dense(num: Tensor, idx: Tensor) -> Tensor:                       # num (nq,), idx (nq, W)
        nq, nk = idx.shape[0], idx.shape[1]
        sel = torch.arange(idx.shape[1], device=idx.device)[None, :] < num[:, None]
        grid = torch.zeros(nq, nk + 1, dtype=torch.int8, device=idx.device)
        grid.scatter_(1, torch.where(sel, idx, nk).long(), 1)              # unselected -> spare column
        return grid[:, :nk]
    states = dense(block_mask.kv_num_blocks[b, 0], block_mask.kv_indices[b, 0])
    if block_mask.full_kv_num_blocks is not None:
        states = states + 2 * dense(block_mask.full_kv_num_blocks[b, 0], block_mask.full_kv_indices[b, 0])
    return states.cpu()


def _digest(mask: Optional[Tensor]) -> str:
    if mask is None:
        return "-"
    return hashlib.blake2b(mask.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()


def flex_plan(B: int, T: int, window: int, global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
              causal: bool, device, layout: str = "global_first", *, dilation: int = 1,
              pattern: Optional[MaskMod] = None):
    """(block_mask, idx, valid, Gp) for these masks, cached.

    ``dilation`` / ``pattern`` as in :func:`tutor.masks.hybrid_mask`. The cache key holds the
    pattern object itself: compared by identity, and kept alive so its id is never reused.

    ``layout="global_first"``: the backend's layout (see the module docstring).
    ``layout="in_place"``: ``hybrid_mask_mod`` on the original positions, as a user would first
    write it; kept as the baseline the benchmark compares with.
    """
    if layout not in ("global_first", "in_place"):
        raise ValueError(f"layout must be 'global_first' or 'in_place', got {layout!r}")
    dilation = check_dilation(dilation)
    if check_pattern(pattern) is not None:
        pattern_batch(pattern, B, T)                                       # per-sequence pattern fits?
    key = (B, T, window, causal, dilation, pattern, str(device), layout,
           _digest(global_mask), _digest(key_padding_mask))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    # private copies: the cached mask_mod must not see later in-place edits of the caller's masks
    key_padding_mask = None if key_padding_mask is None else key_padding_mask.clone()
    is_global = effective_globals(global_mask, key_padding_mask)
    is_global = torch.zeros(B, T, dtype=torch.bool, device=device) if is_global is None else is_global.clone()
    idx, valid = global_index(is_global)                                   # (B, G)
    G = idx.shape[1]
    if layout == "global_first":
        Gp = math.ceil(G / BLOCK) * BLOCK
        S = Gp + T
        mod = global_first_mask_mod(window, is_global, key_padding_mask, idx, valid, Gp, causal=causal,
                                    dilation=dilation, pattern=pattern)
        nb = math.ceil(S / BLOCK)
        lines = torch.arange(nb, device=device) < Gp // BLOCK              # the front tiles
        tiles = candidate_tiles(nb, window * dilation, causal, lines, lines)
    else:
        Gp, S = 0, T
        mod = hybrid_mask_mod(window, is_global, key_padding_mask, causal=causal, dilation=dilation,
                              pattern=pattern)
        nb = math.ceil(S / BLOCK)
        has = torch.zeros(nb, dtype=torch.bool, device=device)
        has[torch.unique(is_global.nonzero()[:, 1] // BLOCK)] = True       # tiles holding a global token
        tiles = candidate_tiles(nb, window * dilation, causal, has, has)
    if pattern is not None:                                                # not band-limited: every tile
        tiles = torch.ones_like(tiles)
    plan = (block_mask_from_tiles(mod, B, S, tiles), idx, valid, Gp)
    _CACHE[key] = plan
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan


def flex_attention_hybrid(q: Tensor, k: Tensor, v: Tensor, window: int,
                          global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                          causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                          layout: str = "global_first", dilation: int = 1,
                          pattern: Optional[MaskMod] = None) -> Tensor:
    """SPEC.md attention with compiled FlexAttention. q, k, v: (B, H, T, Dh) -> (B, H, T, Dh).

    ``dilation`` / ``pattern`` widen the local term as in :func:`tutor.masks.hybrid_mask`.
    """
    window, global_mask, key_padding_mask, scale = check_inputs(
        q, k, v, window, global_mask, key_padding_mask, scale)
    grad = needs_grad(q, k, v)
    reason = flex_why_not(q, grad, return_weights)
    if reason is not None:
        raise ValueError(f"backend='flex' cannot run here: {reason}")
    B, H, T, Dh = q.shape
    block_mask, idx, valid, Gp = flex_plan(B, T, window, global_mask, key_padding_mask, causal,
                                           q.device, layout, dilation=dilation, pattern=pattern)
    G = idx.shape[1]
    if Gp:
        idx_p = torch.zeros(B, Gp, dtype=idx.dtype, device=q.device)
        idx_p[:, :G] = idx
        q, k, v = (torch.cat([gather_tokens(x, idx_p), x], dim=2) for x in (q, k, v))  # (B, H, Gp+T, Dh)
    # every new shape or rule compiles once; above dynamo's default limit (8) it would silently
    # fall back to *eager* flex_attention, which builds the full (T, T) scores
    limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
    with torch._dynamo.config.patch(recompile_limit=limit):
        out = compiled_flex()(q, k, v, block_mask=block_mask, scale=scale)  # (B, H, Gp+T, Dh)
    if not Gp:
        return out
    if grad:                                                               # out of place, for autograd
        return scatter_rows(out[:, :, Gp:], idx, valid, out[:, :, :G])    # (B, H, T, Dh)
    rows = out[:, :, Gp:]                                                  # (B, H, T, Dh), a view
    bi, gi = valid.nonzero(as_tuple=True)                                  # real global slots
    rows[bi, :, idx[bi, gi]] = out[bi, :, gi]                              # front rows to their places
    return rows
