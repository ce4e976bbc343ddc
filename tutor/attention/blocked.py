"""Memory-linear blocked hybrid attention in pure PyTorch (CPU and GPU): the entry point and its loop.

The algorithm, for queries cut into blocks of ``b`` (:mod:`.blocked_steps` has each step,
:mod:`.blocked_globals` the global tokens, :mod:`.lean_backward` the backward pass):

1. **Plan.** Block ``n`` (queries ``n*b .. n*b+b-1``) only needs keys ``n*b - w .. n*b+b-1+w``,
   the key blocks ``n - n_side .. n + n_side`` with ``n_side = ceil(w / b)`` (``n - n_side .. n``
   when causal): a *span* of ``S = ns * b`` keys, ``ns = 2 n_side + 1`` blocks. With the default ``b ~ w``, ``ns = 3``.
2. **Chunks.** Query blocks go in chunks that hold at most ``CHUNK_ELEMENTS`` scores, whatever T
   is. A chunk copies the slice of K and V it needs *once*, block-major (n_blocks, B*H, b, Dh),
   padding only at the two ends of the sequence; the j-th key block of every query block is then
   the contiguous slice ``[j : j+n]``: ``ns`` plain batched matmuls, no overlapping span tensor.
3. **Chunk scores.** (n*B*H, b, S + G): the span and the G global keys as G extra columns of the
   same softmax. Masks *select*, they never add: a disallowed score is overwritten with ``-inf``,
   the static band only in the key blocks it cuts, padding and the sequence ends only in chunks
   that need them; a global key inside a window is scored by the window and masked in its
   global column, so every pair counts once. Padded keys and values are zeroed in the chunk's
   copy, so a NaN or inf outside the mask never reaches a row (not even as ``0 * NaN``).
4. **Chunk output.** Softmax (rows with nothing allowed, padded queries, become 0, not NaN),
   then ``p @ [span values | global values]``, written into the output rows.
5. **Global rows.** One dense G x T pass over the global queries, written over their rows.

Work is O(T * (S + G)); nothing of size T x T, nor unfold's (B, H, T, 2w+1, Dh) window, is
built. ``dilation=d`` (notebook 05) stretches the reach to ``w*d``: the span covers ``b + 2wd``
keys and the band keeps every d-th offset. Arbitrary patterns are not band-limited, so they are
refused here (use the flex backend or dense_attention).

Training: with a gradient needed, the default ``backward="lean"`` runs the same loop once, keeps
only q, k, v, the output and one log-sum-exp per row, and recomputes each chunk in the backward
pass (:mod:`.lean_backward`); ``backward="autograd"`` lets autograd keep every chunk's tensors.

Softmax statistics are float32 (float64 for float64 inputs). On CPU the matmuls run in that
dtype; on CUDA, half-precision inference keeps the matmuls in the input dtype with float32
outputs (tensor cores, FlashAttention-style); training upcasts.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arguments import check_int, check_pattern
from ..costs import CHUNK_ELEMENTS, CUDA_CHUNK_ELEMENTS, default_block_size, key_span  # noqa: F401 (the model's formulas)
from ..masks import MaskMod
from .call import AttentionCall, attention_call
from .blocked_globals import all_weights, global_columns, plan_global_rows, weights_chunk
from .blocked_steps import (BlockedPlan, chunk_output, chunk_probs, chunk_scores, has_out_dtype,
                            key_blocks, make_plan, query_blocks)
from .global_tokens import write_global_rows
from .lean_backward import BACKWARDS, LeanBlockedAttention, lean_why_not
from .softmax import row_lse

__all__ = ["blocked_hybrid_attention", "blocked_forward", "run_chunks", "CHUNK_ELEMENTS", "CUDA_CHUNK_ELEMENTS",
           "BACKWARDS"]


def blocked_hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                             global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                             causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                             dropout_p: float = 0.0, block_size: Optional[int] = None, dilation: int = 1,
                             pattern: Optional[MaskMod] = None, backward: str = "lean"):
    """Same contract as :func:`dense_attention`, in O(T) memory.

    q, k, v: (B, H, T, Dh). Returns out (B, H, T, Dh) [, weights (B, H, T, T)].
    ``block_size`` overrides the query block ``b`` (default: :func:`default_block_size`).
    ``dilation=d`` uses the dilated window ``|i - j| <= w*d and (i - j) % d == 0``: the key span
    becomes ``b + 2wd``. ``pattern`` is not supported (it is not band-limited): a ValueError
    points to ``backend="flex"`` or :func:`dense_attention`.
    ``backward``: ``"lean"`` (default) recomputes each chunk in the backward pass and keeps O(T Dh)
    memory (:class:`~.lean_backward.LeanBlockedAttention`); ``"autograd"`` lets autograd store
    every chunk. Dropout and ``return_weights`` always take the autograd path (see
    :func:`~.lean_backward.lean_why_not`).
    """
    call = attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                          return_weights=return_weights, dropout_p=dropout_p, dilation=dilation)
    if check_pattern(pattern) is not None:
        raise ValueError(f"blocked_hybrid_attention does not support pattern= (got {getattr(pattern, '__name__', pattern)!r}): "
                         "an arbitrary pattern is not band-limited. Use hybrid_attention(..., backend='flex') "
                         "or dense_attention(..., pattern=...)")
    if block_size is not None:
        block_size = check_int("block_size", block_size, 1)
    if not isinstance(backward, str) or backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    return blocked_forward(call, block_size=block_size, backward=backward)


def blocked_forward(call: AttentionCall, *, block_size: Optional[int] = None, backward: str = "lean"):
    """:func:`blocked_hybrid_attention` of a validated call (no pattern; ``block_size``, ``backward`` checked)."""
    q, k, v = call.q, call.k, call.v
    if call.empty:                                                         # B = 0 or H = 0: nothing to run
        return call.empty_result()
    grad = call.needs_grad
    lean = grad and backward == "lean" and lean_why_not(call.dropout_p, call.return_weights) is None
    # half-precision inference on CUDA: matmuls in the input dtype, float32 scores and outputs
    acc = call.acc
    mm = q.dtype if (q.is_cuda and q.dtype != acc and not grad and has_out_dtype(q.device, q.dtype)) else acc
    plan = make_plan(call, block_size=block_size, mm=mm,
                     chunk_elements=CUDA_CHUNK_ELEMENTS if q.is_cuda else CHUNK_ELEMENTS)
    if lean:
        return LeanBlockedAttention.apply(q, k, v, plan, run_chunks)
    out, weights, _ = run_chunks(plan, q, k, v, dropout_p=call.dropout_p, return_weights=call.return_weights,
                                 inplace=not (grad or call.return_weights))
    return (out, weights) if call.return_weights else out


def run_chunks(plan: BlockedPlan, q: Tensor, k: Tensor, v: Tensor, *, dropout_p: float = 0.0,
               return_weights: bool = False, inplace: bool = True, with_lse: bool = False):
    """The chunk loop: ``(out (B, H, T, Dh), weights (B, H, T, T) or None, lse or None)``.

    ``inplace``: no autograd watches, so buffers are overwritten freely. ``with_lse``: also the
    per-row log-sum-exp the lean backward recomputes from, ``(local (B, H, T), global (B, H, G))``.
    """
    B, H, T, Dh, b, BH = plan.B, plan.H, plan.T, plan.Dh, plan.b, plan.BH
    k_g, v_g = global_columns(plan, k, v)                                  # (B*H, G, Dh) or None
    out = torch.empty(BH, plan.n_blocks * b, Dh, dtype=plan.acc, device=q.device) if inplace else None
    lse = torch.empty(plan.n_blocks, BH, b, dtype=plan.acc, device=q.device) if with_lse else None
    outs, weight_rows = [], []
    for n0, n1 in plan.chunks():
        n = n1 - n0
        qb = query_blocks(plan, q, n0, n1)                                 # (n*B*H, b, Dh)
        s, drop = chunk_scores(plan, qb, key_blocks(plan, k, n0, n1), k_g, n0, n1)  # (n*B*H, b, S+G)
        if with_lse:
            lse[n0:n1] = row_lse(s).view(n, BH, b)
        p = chunk_probs(s, drop, inplace)                                  # (n*B*H, b, S+G)
        del s
        p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
        o = chunk_output(plan, p_drop, key_blocks(plan, v, n0, n1), v_g).view(n, BH, b, Dh).transpose(0, 1)
        if inplace:
            out[:, n0 * b:n1 * b].view(BH, n, b, Dh).copy_(o)              # (B*H, n, b, Dh)
        else:
            outs.append(o.reshape(BH, n * b, Dh))                          # (B*H, n*b, Dh)
        if return_weights:
            weight_rows.append(weights_chunk(plan, p, n0, n1))             # (B, H, t, T)
        del p, p_drop                                                      # before the next chunk's scores
    out = (out if inplace else torch.cat(outs, dim=1))[:, :T].view(B, H, T, Dh)  # (B, H, T, Dh)
    p_rows = lse_rows = None
    if plan.G:
        rows, p_rows, lse_rows = plan_global_rows(plan, q, k, v, dropout_p)  # (B, H, G, Dh), (B, H, G, T), (B, H, G)
        out = write_global_rows(out, plan.idx, plan.valid, rows, inplace=inplace)
    weights = all_weights(plan, weight_rows, p_rows) if return_weights else None
    if with_lse:
        lse = (lse.permute(1, 0, 2).reshape(B, H, plan.n_blocks * b)[..., :T], lse_rows)
    return out.to(q.dtype).contiguous(), weights, lse
