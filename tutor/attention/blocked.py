"""Memory-linear blocked hybrid attention in pure PyTorch (CPU and GPU).

Queries are cut into blocks of ``b``; block ``n`` (queries ``n*b .. n*b+b-1``) can only see keys
``n*b - w .. n*b + b - 1 + w``: a *key span* of ``L = b + 2w``. Scores are (b x L) per block, so
the work is O(T * (b + 2w + G)) and nothing of size T x T, nor the (B, H, T, 2w+1, Dh) window
tensor of ``unfold``, is ever built. Global keys join every block as G extra columns of the same
softmax; global rows are one dense pass over G queries. Blocks are processed in chunks so the
peak memory is capped whatever T is.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_inputs
from ._common import effective_globals, gather_tokens, global_index, global_row_probs, masked_softmax, scatter_rows

#: scores (float32 elements) one chunk of query blocks may hold at once
CHUNK_ELEMENTS = 1 << 22


def default_block_size(window: int, T: int) -> int:
    """A power of two near ``w`` (at least 16, at most 256), never much larger than T."""
    b = 1 << max(4, min(8, math.ceil(math.log2(max(window, 1)))))
    return max(1, min(b, 1 << math.ceil(math.log2(T))))


def _span_view(x: Tensor, n0: int, n1: int, b: int, window: int, T: int, fill=0) -> Tensor:
    """Key spans of query blocks n0..n1-1: x (B, H, T, D) -> (B, H, n, L, D); x (B, T) -> (B, n, L).

    Only the slice of x the chunk needs is padded (a small copy), then unfolded as a view.
    """
    s, e = n0 * b - window, n1 * b + window                                # span of the chunk
    lo, hi = max(s, 0), min(e, T)
    if x.dim() == 4:
        xs = F.pad(x[:, :, lo:hi], (0, 0, lo - s, e - hi), value=fill)      # (B, H, n*b+2w, D)
        return xs.unfold(2, b + 2 * window, b).transpose(-1, -2)           # (B, H, n, L, D)
    xs = F.pad(x[:, lo:hi], (lo - s, e - hi), value=fill)                  # (B, n*b+2w)
    return xs.unfold(1, b + 2 * window, b)                                 # (B, n, L)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                      global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                      causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                      dropout_p: float = 0.0, block_size: Optional[int] = None):
    """Same contract as :func:`dense_attention`, in O(T) memory.

    q, k: (B, H, T, Dh); v: (B, H, T, Dv). Returns out (B, H, T, Dv) [, weights (B, H, T, T)].
    ``block_size`` overrides the query block ``b`` (default: :func:`default_block_size`).
    """
    window, global_mask, key_padding_mask, scale = check_inputs(
        q, k, v, window, global_mask, key_padding_mask, scale)
    B, H, T, _ = q.shape
    Dv = v.shape[-1]
    dev = q.device
    b = block_size or default_block_size(window, T)
    L = b + 2 * window
    nb = math.ceil(T / b)
    is_pad = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T, dtype=torch.bool, device=dev)
    is_global = effective_globals(global_mask, key_padding_mask)
    if is_global is None:
        is_global = torch.zeros(B, T, dtype=torch.bool, device=dev)
    idx, valid = global_index(is_global)                                   # (B, G)
    G = idx.shape[1]
    k_g, v_g = gather_tokens(k, idx).float(), gather_tokens(v, idx).float()  # (B, H, G, D*)

    # static part of the local rule inside a block: d = i - j = r - c + w
    d = torch.arange(b, device=dev)[:, None] - torch.arange(L, device=dev)[None, :] + window  # (b, L)
    band = (d >= 0) & (d <= window) if causal else d.abs() <= window       # (b, L)
    q_pad = F.pad(is_pad, (0, nb * b - T), value=True)                     # (B, nb*b) tail = padding
    chunk = max(1, CHUNK_ELEMENTS // max(1, B * H * b * (L + G)))

    outs, weight_rows = [], []
    for n0 in range(0, nb, chunk):
        n1 = min(nb, n0 + chunk)
        n, t0, t1 = n1 - n0, n0 * b, min(n1 * b, T)
        qc = F.pad(q[:, :, t0:t1].float(), (0, 0, 0, n * b - (t1 - t0)))  # (B, H, n*b, Dh)
        k_span = _span_view(k.float(), n0, n1, b, window, T)              # (B, H, n, L, Dh)
        v_span = _span_view(v.float(), n0, n1, b, window, T)              # (B, H, n, L, Dv)
        key_out = _span_view(is_pad | is_global, n0, n1, b, window, T, True)  # (B, n, L)
        qpad = q_pad[:, t0:n1 * b].view(B, n, b)                           # (B, n, b)

        s_loc = (qc.view(B, H, n, b, -1) @ k_span.transpose(-1, -2)) * scale  # (B, H, n, b, L)
        ok_loc = band & ~key_out[:, :, None, :] & ~qpad[..., None]         # (B, n, b, L)
        s_glob = (qc @ k_g.transpose(-1, -2)) * scale                      # (B, H, n*b, G)
        ok_glob = valid[:, None, :] & ~qpad.reshape(B, n * b, 1)           # (B, n*b, G)
        if causal:
            i = torch.arange(t0, n1 * b, device=dev)
            ok_glob = ok_glob & (idx[:, None, :] <= i[None, :, None])

        p = masked_softmax(torch.cat([s_loc.reshape(B, H, n * b, L), s_glob], -1),
                           torch.cat([ok_loc.reshape(B, n * b, L), ok_glob], -1)[:, None])  # (B, H, n*b, L+G)
        p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
        p_loc, p_glob = p_drop.split([L, G], dim=-1)
        o = (p_loc.view(B, H, n, b, L) @ v_span).reshape(B, H, n * b, Dv) + p_glob @ v_g  # (B, H, n*b, Dv)
        outs.append(o[:, :, : t1 - t0])
        if return_weights:
            weight_rows.append(_weights_chunk(p[:, :, : t1 - t0], idx, n0, b, window, L, T))
    out = torch.cat(outs, dim=2)                                           # (B, H, T, Dv)

    p_rows = global_row_probs(q, k, idx, valid, key_padding_mask, causal, scale)  # (B, H, G, T)
    p_rows_drop = F.dropout(p_rows, dropout_p) if dropout_p > 0 else p_rows
    out = scatter_rows(out, idx, valid, p_rows_drop @ v.float()).to(q.dtype)  # (B, H, T, Dv)
    if not return_weights:
        return out
    weights = scatter_rows(torch.cat(weight_rows, dim=2), idx, valid, p_rows)  # (B, H, T, T)
    return out, weights


def _weights_chunk(p: Tensor, idx: Tensor, n0: int, b: int, window: int, L: int, T: int) -> Tensor:
    """Scatter a chunk's [span | global] probabilities (B, H, t, L+G) into rows (B, H, t, T)."""
    B, H, t, _ = p.shape
    rows = torch.arange(n0 * b, n0 * b + t, device=p.device)               # query positions
    cols = (rows // b * b - window)[:, None] + torch.arange(L, device=p.device)[None, :]  # (t, L)
    w = torch.zeros(B, H, t, T, device=p.device)
    w = w.scatter_add(3, cols.clamp(0, T - 1).expand(B, H, t, L), p[..., :L])  # masked slots add 0
    return w.scatter_add(3, idx[:, None, None, :].expand(B, H, t, -1), p[..., L:])
