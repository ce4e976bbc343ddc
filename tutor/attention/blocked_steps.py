"""The steps of the blocked backend: its plan, a chunk's blocks, a chunk's scores, a chunk's output.

:mod:`.blocked` runs these in its chunk loop (the algorithm is in its docstring) and
:mod:`.lean_backward` runs them again to recompute a chunk's probabilities in the backward pass.
Shapes: a chunk holds ``n`` query blocks of ``b`` queries; ``M = n * B * H`` (block-major);
every query block scores a span of ``S = ns * b`` keys (``ns`` key blocks, the first ``n_side``
blocks to its left) and the ``G`` global keys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..costs import default_block_size, key_span
from .call import AttentionCall

NEG_INF = float("-inf")


@dataclass(frozen=True)
class BlockedPlan:
    """Everything the chunks share: shapes, the block layout, the masks, the dtypes.

    ``idx, valid`` (B, G): the global tokens that count; ``pad`` (B, T) bool: padding (all False
    when there is none, ``has_pad`` says which); ``band_out`` (b, S) bool: pairs of a query block
    and its span outside the local window; ``cut[j]``: whether the band cuts key block ``j``.
    ``acc``: dtype of scores and statistics; ``mm``: dtype of the matmul inputs.
    """
    B: int
    H: int
    T: int
    Dh: int
    window: int
    dilation: int
    causal: bool
    scale: float
    b: int
    n_side: int
    S: int
    ns: int
    n_blocks: int
    chunk: int
    idx: Tensor
    valid: Tensor
    pad: Tensor
    has_pad: bool
    band_out: Tensor
    cut: Tuple[bool, ...]
    acc: torch.dtype
    mm: torch.dtype

    @property
    def G(self) -> int:
        return self.idx.shape[1]

    @property
    def BH(self) -> int:
        return self.B * self.H

    @property
    def key_padding_mask(self) -> Optional[Tensor]:
        """(B, T) bool padding, or None when nothing is padded."""
        return self.pad if self.has_pad else None

    def chunks(self) -> Iterator[Tuple[int, int]]:
        """Query blocks ``n0 .. n1-1`` of each chunk, in order."""
        for n0 in range(0, self.n_blocks, self.chunk):
            yield n0, min(self.n_blocks, n0 + self.chunk)

    def key_range(self, n0: int, n1: int) -> Tuple[int, int]:
        """Keys ``lo .. hi-1`` the chunk of query blocks ``n0 .. n1-1`` scores (may pass both ends)."""
        lo = (n0 - self.n_side) * self.b
        return lo, lo + (n1 - n0 + self.ns - 1) * self.b


def make_plan(call: AttentionCall, *, block_size: Optional[int], mm: torch.dtype,
              chunk_elements: int) -> BlockedPlan:
    """The plan of one validated call (its window is ``call.reach``); ``block_size`` None: the default."""
    q, window, dilation, causal = call.q, call.reach, call.dilation, call.causal
    B, H, T, Dh = q.shape
    dev = q.device
    offset = window * dilation                                             # farthest local key |i - j|
    b = block_size or default_block_size(offset, T)
    n_side, S = key_span(offset, b, causal)                                # key blocks per side, span
    ns = S // b
    idx, valid = call.slots                                                # (B, G), (B, G)
    key_padding_mask = call.key_padding_mask
    has_pad = key_padding_mask is not None and bool(key_padding_mask.any())
    pad = key_padding_mask if has_pad else torch.zeros(B, T, dtype=torch.bool, device=dev)
    d = torch.arange(b, device=dev)[:, None] + n_side * b - torch.arange(S, device=dev)[None, :]  # (b, S): i - j
    band_out = ~local_rule(d, window, causal, dilation)                    # (b, S)
    cut = tuple(bool(band_out[:, j * b:(j + 1) * b].any()) for j in range(ns))
    chunk = max(1, chunk_elements // max(1, B * H * b * (S + idx.shape[1])))
    return BlockedPlan(B, H, T, Dh, window, dilation, causal, call.scale, b, n_side, S, ns, math.ceil(T / b), chunk,
                       idx, valid, pad, has_pad, band_out, cut, call.acc, mm)


def local_rule(d: Tensor, window: int, causal: bool, dilation: int = 1) -> Tensor:
    """The local rule on offsets ``d = i - j``: ``|d| <= w*dil and d % dil == 0`` (causal: ``d >= 0``)."""
    offset = window * dilation                                             # farthest local key
    ok = (d >= 0) & (d <= offset) if causal else d.abs() <= offset
    return ok if dilation == 1 else ok & (d % dilation == 0)


def edge_slice(x: Tensor, lo: int, hi: int, fill=0) -> Tensor:
    """Positions ``lo .. hi-1`` of x along T (dim 2 of (B, H, T, D), dim 1 of (B, T)).

    A view when ``[lo, hi)`` lies inside ``[0, T)``; otherwise only this slice is padded.
    """
    dim = 2 if x.dim() == 4 else 1
    T = x.shape[dim]
    a, z = max(lo, 0), min(hi, T)
    xs = x.narrow(dim, a, max(z - a, 0))
    if a == lo and z == hi:
        return xs
    pad = (a - lo, hi - z) if dim == 1 else (0, 0, a - lo, hi - z)
    return F.pad(xs, pad, value=fill)                                      # (B, H, hi-lo, D) or (B, hi-lo)


def blocks(x: Tensor, lo: int, hi: int, b: int, dtype) -> Tensor:
    """Positions ``lo .. hi-1`` of x (B, H, T, D) as blocks, block-major: (nblk, B*H, b, D).

    A fresh copy, the chunk's only copy of q, K or V: slices ``[j : j+n]`` of it are contiguous
    (n*B*H, b, D) batches for ``bmm``.
    """
    B, H, _, D = x.shape
    xb = edge_slice(x, lo, hi).reshape(B * H, (hi - lo) // b, b, D).transpose(0, 1)  # (nblk, B*H, b, D)
    return torch.empty(xb.shape, dtype=dtype, device=x.device).copy_(xb)


def query_blocks(plan: BlockedPlan, q: Tensor, n0: int, n1: int) -> Tensor:
    """The chunk's queries times ``scale``: (n*B*H, b, Dh), zero at padded positions (they read nothing)."""
    b = plan.b
    qb = blocks(q, n0 * b, n1 * b, b, plan.mm).mul_(plan.scale)            # (n, B*H, b, Dh)
    if plan.has_pad:
        n = n1 - n0
        pad = edge_slice(plan.pad, n0 * b, n1 * b, True).view(plan.B, n, b).transpose(0, 1)  # (n, B, b)
        qb.view(n, plan.B, plan.H, b, plan.Dh).masked_fill_(pad[:, :, None, :, None], 0)
    return qb.view(-1, b, plan.Dh)


def key_blocks(plan: BlockedPlan, x: Tensor, n0: int, n1: int) -> Tensor:
    """The chunk's keys (or values) ``lo .. hi-1``: (n+ns-1, B*H, b, Dh), zero at padded positions.

    Zeroing padding here is what keeps a NaN or inf in a padded key or value out of every row:
    its probability is exactly 0, and ``0 * 0`` is 0 where ``0 * NaN`` is not.
    """
    lo, hi = plan.key_range(n0, n1)
    xb = blocks(x, lo, hi, plan.b, plan.mm)                                # (n+ns-1, B*H, b, Dh)
    if plan.has_pad:
        nk = xb.shape[0]
        pad = edge_slice(plan.pad, lo, hi, True).view(plan.B, nk, plan.b).transpose(0, 1)  # (n+ns-1, B, b)
        xb.view(nk, plan.B, plan.H, plan.b, plan.Dh).masked_fill_(pad[:, :, None, :, None], 0)
    return xb


@lru_cache(maxsize=None)
def has_out_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``bmm(a, b, out_dtype=float32)`` works for ``dtype`` inputs on ``device`` (tried once)."""
    try:
        a = torch.ones(1, 2, 2, device=device, dtype=dtype)
        return bool(torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32)
    except (TypeError, RuntimeError, NotImplementedError):  # older torch or device: we upcast instead
        return False


def scores_mm(qb: Tensor, kb: Tensor, acc) -> Tensor:
    """qb (M, b, D) @ kb (M, c, D)^T -> (M, b, c) in ``acc``."""
    if qb.dtype != acc:                                                    # CUDA half: fp32 out of the MMA
        return torch.bmm(qb, kb.transpose(1, 2), out_dtype=acc)
    return torch.bmm(qb, kb.transpose(1, 2))                               # (M, b, c)


def pv_mm(o: Optional[Tensor], p: Tensor, vb: Tensor, acc) -> Tensor:
    """o (M, b, D) += p (M, b, c) @ vb (M, c, D), accumulated in ``acc``."""
    if vb.dtype != acc:
        pv = torch.bmm(p.to(vb.dtype), vb, out_dtype=acc)
        return pv if o is None else o.add_(pv)
    return torch.bmm(p, vb) if o is None else o.baddbmm_(p, vb)


def global_columns_out(plan: BlockedPlan, t0: int, rows: int) -> Tensor:
    """(B, rows, G) bool: global key slots queries ``t0 ..`` may *not* read in their global columns.

    Invalid slots, future ones when causal, and ones already inside the local window (scored
    there: every pair counts once).
    """
    i = torch.arange(t0, t0 + rows, device=plan.idx.device)[None, :, None]  # query positions
    gap = i - plan.idx[:, None, :]                                         # (B, rows, G)
    ok = plan.valid[:, None, :] & ~local_rule(gap, plan.window, plan.causal, plan.dilation)
    if plan.causal:
        ok &= gap >= 0                                                     # no future global key
    return ~ok


def chunk_scores(plan: BlockedPlan, qb: Tensor, kb: Tensor, k_g: Optional[Tensor],
                 n0: int, n1: int) -> Tuple[Tensor, Optional[Tensor]]:
    """Scores of the chunk's queries against their spans and the global keys, masked with -inf.

    qb (n*B*H, b, Dh); kb (n+ns-1, B*H, b, Dh); k_g (B*H, G, Dh) or None.
    Returns ``s`` (n*B*H, b, S+G) and ``drop`` (n, B, 1, b, S+G) bool, the masked-out pairs
    where a row may have nothing allowed (sequence ends, padding; padded queries read nothing),
    or None where every row keeps its own key.
    """
    B, H, b, S, G, ns = plan.B, plan.H, plan.b, plan.S, plan.G, plan.ns
    n, M, Dh = n1 - n0, qb.shape[0], plan.Dh
    pieces = [scores_mm(qb, kb[j:j + n].view(M, b, Dh), plan.acc) for j in range(ns)]  # ns x (M, b, b)
    if G:
        pieces.append(scores_mm(qb, k_g.expand(n, -1, -1, -1).reshape(M, G, Dh), plan.acc))  # (M, b, G)
    s = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]        # (M, b, S+G)
    del pieces
    s5 = s.view(n, B, H, b, S + G)
    for j in range(ns):                                                    # the static band
        if plan.cut[j]:
            s5[..., j * b:(j + 1) * b].masked_fill_(plan.band_out[:, j * b:(j + 1) * b], NEG_INF)
    lo, hi = plan.key_range(n0, n1)
    drop = None
    if lo < 0 or hi > plan.T or plan.has_pad:                              # sequence ends / padding
        k_out = edge_slice(plan.pad, lo, hi, True).unfold(1, S, b).transpose(0, 1)        # (n, B, S)
        q_out = edge_slice(plan.pad, n0 * b, n1 * b, True).view(B, n, b).transpose(0, 1)  # (n, B, b)
        drop = torch.empty(n, B, 1, b, S + G, dtype=torch.bool, device=s.device)
        drop[..., :S] = k_out[:, :, None, None, :] | q_out[:, :, None, :, None]
        drop[..., S:] = q_out[:, :, None, :, None]
    if G:
        g_out = global_columns_out(plan, n0 * b, n * b).view(B, n, b, G).transpose(0, 1)[:, :, None]  # (n, B, 1, b, G)
        if drop is None:
            s5[..., S:].masked_fill_(g_out, NEG_INF)
        else:
            drop[..., S:] |= g_out
    if drop is not None:
        s5.masked_fill_(drop, NEG_INF)
    return s, drop


def chunk_probs(s: Tensor, drop: Optional[Tensor], inplace: bool) -> Tensor:
    """Softmax of masked scores (M, b, S+G); rows with nothing allowed become 0, not NaN."""
    p = torch.softmax(s, dim=-1)                                           # (M, b, S+G)
    if drop is None:
        return p
    n, B, _, b, C = drop.shape
    p5 = p.view(n, B, -1, b, C)
    return (p5.masked_fill_(drop, 0) if inplace else p5.masked_fill(drop, 0)).view(p.shape)


def chunk_output(plan: BlockedPlan, p: Tensor, vb: Tensor, v_g: Optional[Tensor]) -> Tensor:
    """The chunk's output rows: p (n*B*H, b, S+G) @ [span values | global values] -> (n*B*H, b, Dh)."""
    b, G, M = plan.b, plan.G, p.shape[0]
    n = M // plan.BH
    o = None
    for j in range(plan.ns):
        o = pv_mm(o, p[:, :, j * b:(j + 1) * b], vb[j:j + n].view(M, b, plan.Dh), plan.acc)
    if G:
        o = pv_mm(o, p[:, :, plan.S:], v_g.expand(n, -1, -1, -1).reshape(M, G, plan.Dh), plan.acc)
    return o                                                               # (M, b, Dh)
