"""Memory-linear blocked hybrid attention in pure PyTorch (CPU and GPU).

Queries are cut into blocks of ``b``. Block ``n`` (queries ``n*b .. n*b+b-1``) only needs keys
``n*b - w .. n*b + b - 1 + w``, which lie in the key blocks ``n - r .. n + r`` with
``r = ceil(w / b)`` (``n - r .. n`` when causal): a *key span* of ``ns = 2r + 1`` blocks. Scores
are (b x ns*b) per block, so the work is O(T * (ns*b + G)) and nothing of size T x T, nor
unfold's (B, H, T, 2w+1, Dh) window tensor, is ever built. With the default ``b ~ w`` the span is
3 blocks, exactly ``b + 2w`` keys.

How it stays fast and lean:

* Each chunk of query blocks copies the slice of K and V it needs *once*, block-major
  (n_blocks, B*H, b, Dh); padding happens only at the two ends of the sequence. The j-th key
  block of every query block is then the contiguous slice ``[j : j+n]``: ``ns`` plain batched
  matmuls, no overlapping span tensor.
* Masks *select*, they never add: a disallowed score is overwritten with ``-inf``
  (``masked_fill_``, so a NaN or inf key outside the mask cannot leak in), the static band only
  in the key blocks it cuts, padding and the sequence ends only in chunks that need them.
  Padded query rows read nothing. Where a row may have nothing allowed (padding, the ends), the
  probabilities are overwritten with 0 after the softmax, and padded keys and values are zeroed
  in the chunk's copies, so no ``0 * NaN`` reaches the output or autograd.
* The G global keys are G extra columns of the same softmax; a global key inside a window is
  scored by the window and masked in its global column, so every pair counts once. Global rows
  are one dense pass over the G global queries, written over their rows.
* Chunks of query blocks cap the scores held at once (``CHUNK_ELEMENTS``), whatever T is.
* ``dilation=d`` (notebook 05) only stretches the reach to ``w*d``: the span covers
  ``b + 2wd`` keys and the static band keeps every d-th offset. Arbitrary patterns are not
  band-limited, so they are refused here (use the flex backend or dense_attention).

Softmax statistics are float32 (float64 for float64 inputs). On CPU the matmuls run in that
dtype; on CUDA, half-precision inference keeps the matmuls in the input dtype with float32
outputs (tensor cores, FlashAttention-style); training upcasts.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..costs import default_block_size, key_span
from ..masks import MaskMod, check_dilation, check_pattern
from ._checks import check_inputs, empty_result, needs_grad
from .global_tokens import gather_tokens, global_row_probs, global_slots, scatter_rows, write_global_rows

#: score elements one chunk of query blocks may hold at once on CPU (cache-friendly chunks)
CHUNK_ELEMENTS = 1 << 20
#: the same on CUDA, where fewer and larger launches win
CUDA_CHUNK_ELEMENTS = 1 << 26


def _edge_slice(x: Tensor, lo: int, hi: int, fill=0) -> Tensor:
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


def _blocks(x: Tensor, lo: int, hi: int, b: int, dtype) -> Tensor:
    """Positions ``lo .. hi-1`` of x (B, H, T, D) as blocks, block-major: (nblk, B*H, b, D).

    A fresh copy, the chunk's only copy of q, K or V: slices ``[j : j+n]`` of it are contiguous
    (n*B*H, b, D) batches for ``bmm``.
    """
    B, H, _, D = x.shape
    blocks = _edge_slice(x, lo, hi).reshape(B * H, (hi - lo) // b, b, D).transpose(0, 1)  # (nblk, B*H, b, D)
    return torch.empty(blocks.shape, dtype=dtype, device=x.device).copy_(blocks)


def _local(d: Tensor, window: int, causal: bool, dilation: int = 1) -> Tensor:
    """The local rule on offsets ``d = i - j``: ``|d| <= w*dil and d % dil == 0`` (causal: ``d >= 0``)."""
    reach = window * dilation
    ok = (d >= 0) & (d <= reach) if causal else d.abs() <= reach
    return ok if dilation == 1 else ok & (d % dilation == 0)


def _band(b: int, r: int, ns: int, window: int, causal: bool, device, dilation: int = 1) -> Tensor:
    """Static mask of a query block against its ``ns`` key blocks (the first is block ``n - r``).

    Query offset ``rq`` meets span slot ``c`` (key ``(n-r)*b + c``): ``d = i - j = rq + r*b - c``.
    Returns (b, ns*b) bool: True where the local rule (with ``dilation``) allows the pair.
    """
    d = torch.arange(b, device=device)[:, None] + r * b - torch.arange(ns * b, device=device)[None, :]  # (b, ns*b)
    return _local(d, window, causal, dilation)                             # (b, ns*b)


@lru_cache(maxsize=None)
def _has_out_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``bmm(a, b, out_dtype=float32)`` works for ``dtype`` inputs on ``device`` (tried once)."""
    try:
        a = torch.ones(1, 2, 2, device=device, dtype=dtype)
        return bool(torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32)
    except (TypeError, RuntimeError, NotImplementedError):  # older torch or device: we upcast instead
        return False


def _scores(qb: Tensor, kb: Tensor, acc) -> Tensor:
    """qb (M, b, D) @ kb (M, c, D)^T -> (M, b, c) in ``acc``."""
    if qb.dtype != acc:                                                    # CUDA half: fp32 out of the MMA
        return torch.bmm(qb, kb.transpose(1, 2), out_dtype=acc)
    return torch.bmm(qb, kb.transpose(1, 2))                               # (M, b, c)


def _pv(o: Optional[Tensor], p: Tensor, vb: Tensor, acc) -> Tensor:
    """o (M, b, D) += p (M, b, c) @ vb (M, c, D), accumulated in ``acc``."""
    if vb.dtype != acc:
        pv = torch.bmm(p.to(vb.dtype), vb, out_dtype=acc)
        return pv if o is None else o.add_(pv)
    return torch.bmm(p, vb) if o is None else o.baddbmm_(p, vb)


def blocked_hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                             global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                             causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                             dropout_p: float = 0.0, block_size: Optional[int] = None, dilation: int = 1,
                             pattern: Optional[MaskMod] = None):
    """Same contract as :func:`dense_attention`, in O(T) memory.

    q, k, v: (B, H, T, Dh). Returns out (B, H, T, Dh) [, weights (B, H, T, T)].
    ``block_size`` overrides the query block ``b`` (default: :func:`default_block_size`).
    ``dilation=d`` uses the dilated window ``|i - j| <= w*d and (i - j) % d == 0``: the key span
    becomes ``b + 2wd``. ``pattern`` is not supported (it is not band-limited): a ValueError
    points to ``backend="flex"`` or :func:`dense_attention`.
    """
    window, global_mask, key_padding_mask, scale = check_inputs(
        q, k, v, window, global_mask, key_padding_mask, scale, causal=causal,
        return_weights=return_weights, dropout_p=dropout_p, dilation=dilation)
    dilation = check_dilation(dilation)
    if check_pattern(pattern) is not None:
        raise ValueError(f"blocked_hybrid_attention does not support pattern= (got {getattr(pattern, '__name__', pattern)!r}): "
                         "an arbitrary pattern is not band-limited. Use hybrid_attention(..., backend='flex') "
                         "or dense_attention(..., pattern=...)")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    if q.numel() == 0:                                                     # B = 0 or H = 0: nothing to run
        return empty_result(q, k, v, return_weights)
    reach = window * dilation                                              # farthest local key
    B, H, T, Dh = q.shape
    BH, dev = B * H, q.device
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    grad = needs_grad(q, k, v)
    # half-precision inference on CUDA: matmuls in the input dtype, float32 scores and outputs
    mm = q.dtype if (q.is_cuda and q.dtype != acc and not grad and _has_out_dtype(q.device, q.dtype)) else acc

    b = block_size or default_block_size(reach, T)
    r, Ls = key_span(reach, b, causal)                                     # key blocks per side, span
    ns = Ls // b                                                           # key blocks per query block
    nb = math.ceil(T / b)
    idx, valid = global_slots(global_mask, key_padding_mask, B, T, dev)  # (B, G), (B, G)
    G = idx.shape[1]
    if G:                                                                  # invalid slots: zero keys, values
        k_g = gather_tokens(k, idx).to(mm).masked_fill(~valid[:, None, :, None], 0).reshape(BH, G, Dh)  # (B*H, G, Dh)
        v_g = gather_tokens(v, idx).to(mm).masked_fill(~valid[:, None, :, None], 0).reshape(BH, G, Dh)  # (B*H, G, Dh)
    has_pad = key_padding_mask is not None and bool(key_padding_mask.any())
    key_out = key_padding_mask if has_pad else torch.zeros(B, T, dtype=torch.bool, device=dev)
    band_out = ~_band(b, r, ns, window, causal, dev, dilation)             # (b, Ls): not in the window
    cut = [bool(band_out[:, j * b:(j + 1) * b].any()) for j in range(ns)]  # blocks the band cuts
    budget = CUDA_CHUNK_ELEMENTS if q.is_cuda else CHUNK_ELEMENTS
    chunk = max(1, budget // max(1, BH * b * (Ls + G)))
    inplace = not (grad or return_weights)                                 # no autograd: overwrite freely

    out = torch.empty(BH, nb * b, Dh, dtype=acc, device=dev) if inplace else None
    outs, weight_rows = [], []
    for n0 in range(0, nb, chunk):
        n1 = min(nb, n0 + chunk)
        n, t0, M = n1 - n0, n0 * b, (n1 - n0) * BH
        lo, hi = (n0 - r) * b, (n0 - r + n + ns - 1) * b                   # the chunk's keys
        edge = lo < 0 or hi > T or has_pad                                 # rows may have nothing allowed
        qb = _blocks(q, t0, n1 * b, b, mm).mul_(scale).view(M, b, Dh)      # (n*B*H, b, Dh)
        kb = _blocks(k, lo, hi, b, mm)                                     # (n+ns-1, B*H, b, Dh)
        vb = _blocks(v, lo, hi, b, mm)
        if has_pad:                                                        # padded keys, values: 0
            k_pad = _edge_slice(key_out, lo, hi, True).view(B, n + ns - 1, b).transpose(0, 1)  # (n+ns-1, B, b)
            k_pad = k_pad[:, :, None, :, None]                             # (n+ns-1, B, 1, b, 1)
            kb.view(n + ns - 1, B, H, b, Dh).masked_fill_(k_pad, 0)
            vb.view(n + ns - 1, B, H, b, Dh).masked_fill_(k_pad, 0)
        pieces = [_scores(qb, kb[j:j + n].view(M, b, Dh), acc) for j in range(ns)]  # ns x (n*B*H, b, b)
        if G:
            pieces.append(_scores(qb, k_g.expand(n, BH, G, Dh).reshape(M, G, Dh), acc))  # (M, b, G)
        s = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]    # (n*B*H, b, Ls+G)
        del pieces
        s5 = s.view(n, B, H, b, Ls + G)                                    # (n, B, H, b, Ls+G)
        for j in range(ns):                                                # the static band
            if cut[j]:
                s5[..., j * b:(j + 1) * b].masked_fill_(band_out[:, j * b:(j + 1) * b], float("-inf"))
        drop = None                                                        # (n, B, 1, b, Ls+G): masked out
        if edge:                                                           # sequence ends / padding
            k_out = _edge_slice(key_out, lo, hi, True).unfold(1, Ls, b).transpose(0, 1)  # (n, B, Ls)
            q_out = _edge_slice(key_out, t0, n1 * b, True).view(B, n, b).transpose(0, 1)  # (n, B, b)
            drop = torch.zeros(n, B, 1, b, Ls + G, dtype=torch.bool, device=dev)
            drop[..., :Ls] = k_out[:, :, None, None, :] | q_out[:, :, None, :, None]
            drop[..., Ls:] = q_out[:, :, None, :, None]
        if G:
            i = torch.arange(t0, t0 + n * b, device=dev)[None, :, None]    # query positions
            gap = i - idx[:, None, :]                                      # (B, n*b, G)
            ok_g = valid[:, None, :] & ~_local(gap, window, causal, dilation)  # not already in the window
            if causal:
                ok_g &= gap >= 0                                           # no future global key
            g_out = (~ok_g).view(B, n, b, G).transpose(0, 1)[:, :, None]   # (n, B, 1, b, G)
            if drop is None:
                s5[..., Ls:].masked_fill_(g_out, float("-inf"))
            else:
                drop[..., Ls:] |= g_out
        if drop is not None:
            s5.masked_fill_(drop, float("-inf"))
        p = torch.softmax(s, dim=-1)                                       # (n*B*H, b, Ls+G)
        if drop is not None:                                               # empty rows: 0, not NaN
            p = p.view(n, B, H, b, Ls + G)
            p = (p.masked_fill_(drop, 0) if inplace else p.masked_fill(drop, 0)).view(M, b, Ls + G)
        p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
        o = None
        for j in range(ns):                                                # o: (n*B*H, b, Dh)
            o = _pv(o, p_drop[:, :, j * b:(j + 1) * b], vb[j:j + n].view(M, b, Dh), acc)
        if G:
            o = _pv(o, p_drop[:, :, Ls:], v_g.expand(n, BH, G, Dh).reshape(M, G, Dh), acc)  # (M, b, Dh)
        o = o.view(n, BH, b, Dh).transpose(0, 1)                           # (B*H, n, b, Dh)
        if out is not None:
            out[:, t0:n1 * b].view(BH, n, b, Dh).copy_(o)                  # (B*H, n, b, Dh)
        else:
            outs.append(o.reshape(BH, n * b, Dh))                          # (B*H, n*b, Dh)
        if return_weights:
            p_chunk = p.view(n, B, H, b, Ls + G).permute(1, 2, 0, 3, 4).reshape(B, H, n * b, Ls + G)  # (B, H, n*b, Ls+G)
            weight_rows.append(_weights_chunk(p_chunk[:, :, :min(T - t0, n * b)], idx, t0, b, r, Ls, T))
        del s, s5, p, p_drop                                               # before the next chunk's scores
    out = (out if out is not None else torch.cat(outs, dim=1))[:, :T].view(B, H, T, Dh)  # (B, H, T, Dh)

    if G:
        p_rows = global_row_probs(q, k, idx, valid, key_padding_mask, causal, scale, acc)  # (B, H, G, T)
        p_rows_drop = F.dropout(p_rows, dropout_p) if dropout_p > 0 else p_rows
        v_rows = v.to(acc).masked_fill(key_out[:, None, :, None], 0) if has_pad else v.to(acc)  # (B, H, T, Dh)
        g_out = p_rows_drop @ v_rows                                       # (B, H, G, Dh)
        out = write_global_rows(out, idx, valid, g_out, inplace=inplace)   # (B, H, T, Dh)
    out = out.to(q.dtype).contiguous()
    if not return_weights:
        return out
    weights = torch.cat(weight_rows, dim=2)                                # (B, H, T, T)
    if G:
        weights = scatter_rows(weights, idx, valid, p_rows)
    return out, weights


def _weights_chunk(p: Tensor, idx: Tensor, t0: int, b: int, r: int, Ls: int, T: int) -> Tensor:
    """Scatter a chunk's [span | global] probabilities (B, H, t, Ls+G) into rows (B, H, t, T)."""
    B, H, t, _ = p.shape
    rows = torch.arange(t0, t0 + t, device=p.device)                       # query positions
    cols = (rows // b * b - r * b)[:, None] + torch.arange(Ls, device=p.device)[None, :]  # (t, Ls)
    w = torch.zeros(B, H, t, T, dtype=p.dtype, device=p.device)
    # out-of-range slots are masked (probability exactly 0), so clamping them adds nothing
    w = w.scatter_add(3, cols.clamp(0, T - 1).expand(B, H, t, Ls), p[..., :Ls])  # (B, H, t, T)
    return w.scatter_add(3, idx[:, None, None, :].expand(B, H, t, -1), p[..., Ls:])
