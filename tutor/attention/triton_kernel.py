"""A FlashAttention-style Triton kernel for hybrid local + global attention (forward; trains too).

One program owns a tile of ``BLOCK_M`` queries of one (batch, head). It walks the key tiles of
its band (keys ``m0 - w .. m0 + BLOCK_M - 1 + w``; only up to ``m0 + BLOCK_M - 1`` when causal),
then the tiles of the G global keys (gathered by position), keeping the *online softmax* state
in registers: running max ``m``, running sum ``l`` and the unnormalized output ``acc``. Each new
tile rescales the old state by ``exp(m_old - m_new)``; nothing of size T x T or even
BLOCK_M x (2w+1) is written to memory. Scores and statistics are float32, the P @ V product
runs in the input dtype (tensor cores), the output is written once in the input dtype.

A global key inside a query's window is scored by the band and masked in the global pass, so
each pair counts once. A row with no allowed key (a padded query) keeps ``l = 0`` and outputs 0.
The G global *rows* read every key: they are one dense pass in PyTorch (G x T,
:func:`global_rows_forward`, :mod:`.global_rows`), written over their rows afterwards. Float32
inputs use IEEE float32 dot products (no TF32), to stay within the tolerance of the float32
reference. The steps both this kernel and the backward kernels take (the band's key tiles, the
window rules, loading a tile) are the small jitted functions of :mod:`.triton_steps`.

For training the kernel also writes each row's log-sum-exp ``lse`` (B, H, T) float32, in log2
units (the kernel scores in them, to use ``exp2``; :data:`.softmax.LOG2E` converts outside the
kernel), ``+inf`` for a row with no allowed key (docs/spec.md); the global rows get theirs from
their dense pass. :class:`TritonHybridFunction` saves only ``q, k, v``, the output and ``lse``,
and its backward (:mod:`.triton_backward`) recomputes the probabilities tile by tile: O(T)
memory for training as for inference.

Triton is optional: without it this module still imports (so the kernel can be read), and
:func:`triton_why_not` says why it cannot run. On CPU it runs only under ``TRITON_INTERPRET=1``
(set before triton is imported): Triton's interpreter, slow, for tests on small shapes.
"""
from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace
from typing import Optional, Tuple

import torch
from torch import Tensor

from torch.autograd.function import once_differentiable

from ..arguments import check_int
from .call import AttentionCall, attention_call
from .fused_limits import fused_why_not
from .global_rows import global_rows
from .global_tokens import gather_tokens, scatter_rows
from .softmax import LOG2E, accum_dtype
from .triton_backward import hybrid_backward
from .triton_steps import (band_key_range, in_window, live_rows, load_global_slots, load_key_tile, load_rows,
                           online_softmax_step, outside_window, program_tile, store_rows)

try:
    import triton
    import triton.language as tl
except ImportError:  # the kernel below stays readable; triton_why_not explains the rest
    triton = None
    tl = SimpleNamespace(constexpr=None)


def hybrid_fwd_kernel(Q, K, V, O, LSE2, PAD, GIDX, GVALID,
                      stride_b, stride_h, stride_t, H, T, Dh, G, window, qk_scale,
                      CAUSAL: tl.constexpr, HAS_PAD: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_G: tl.constexpr):
    """Program (query tile, batch*H + head): out rows of local + global attention, online softmax;
    LSE2 (B*H, T) float32 gets each row's log-sum-exp in log2 units (+inf for a row with no key)."""
    pid_m = tl.program_id(0)
    offs_m, offs_d, pid_bh, batch, base = program_tile(H, stride_b, stride_h, BLOCK_M, BLOCK_D)  # queries
    q_live = live_rows(PAD, batch, offs_m, T, HAS_PAD)                     # padded rows read nothing
    q = load_rows(Q, base, offs_m, offs_d, stride_t, Dh, q_live)           # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)                    # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], tl.float32)                                  # running sum of exp
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)                         # running P @ V

    # 1) the band: key tiles that can fall inside some query's window
    lo, hi = band_key_range(pid_m, window, T, CAUSAL, BLOCK_M, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        offs_n, k_live, k, v = load_key_tile(K, V, PAD, base, batch, start, offs_d, stride_t, T, Dh,
                                             HAS_PAD, BLOCK_N)             # (BLOCK_N, BLOCK_D) k, v; padded: 0
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale   # (BLOCK_M, BLOCK_N)
        ok = q_live[:, None] & k_live[None, :] & in_window(offs_m, offs_n, window, CAUSAL)
        m_i, l_i, acc = online_softmax_step(s, ok, v, m_i, l_i, acc, PRECISION)

    # 2) the global keys, gathered by position; those inside the window were counted above
    for g0 in range(0, G, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)
        g_pos, g_ok = load_global_slots(GIDX, GVALID, batch, offs_g, G)    # (BLOCK_G,) positions, real slots
        kg = load_rows(K, base, g_pos, offs_d, stride_t, Dh, g_ok)         # (BLOCK_G, BLOCK_D)
        vg = load_rows(V, base, g_pos, offs_d, stride_t, Dh, g_ok)         # (BLOCK_G, BLOCK_D)
        s = tl.dot(q, tl.trans(kg), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_G)
        ok = q_live[:, None] & g_ok[None, :] & outside_window(offs_m, g_pos, window, CAUSAL)
        m_i, l_i, acc = online_softmax_step(s, ok, vg, m_i, l_i, acc, PRECISION)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]                       # empty rows stay 0
    lse2 = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("inf"))  # no key: +inf
    tl.store(LSE2 + pid_bh * T + offs_m, lse2, mask=offs_m < T)
    store_rows(O, base, offs_m, offs_d, stride_t, Dh, offs_m < T, out)


_jitted = triton.jit(hybrid_fwd_kernel) if triton is not None else None


def triton_why_not(q: Tensor, needs_grad: bool, return_weights: bool, dropout: bool = False) -> Optional[str]:
    """Why the Triton backend cannot run these inputs (None when it can). It trains too:
    ``needs_grad`` no longer excludes it (the backward is :mod:`.triton_backward`)."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    reason = fused_why_not("the Triton kernel", q, return_weights, dropout)
    if reason is not None:
        return reason
    if q.shape[-1] > 256:
        return f"the Triton kernel supports Dh <= 256, got Dh={q.shape[-1]}"
    if q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton needs a CUDA GPU (on CPU only under TRITON_INTERPRET=1, its slow interpreter)"
    if q.device.type not in ("cpu", "cuda"):
        return f"Triton is not set up for device type {q.device.type!r} here"
    return None


def _blocks(q: Tensor, Dh: int, block_m: Optional[int], block_n: Optional[int]):
    """Tile sizes: small under the interpreter, 64 (32 for Dh > 64) keys per tile on a GPU."""
    interpreting = q.device.type == "cpu"
    block_d = max(16, triton.next_power_of_2(Dh))
    return (block_m or (32 if interpreting else 64),
            block_n or (32 if interpreting else (64 if block_d <= 64 else 32)), block_d)


def global_rows_forward(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, valid: Tensor,
                        key_padding_mask: Optional[Tensor], causal: bool, scale: float) -> Tuple[Tensor, Tensor]:
    """Output rows (B, H, G, Dh) float32 and log-sum-exp (B, H, G) of the global queries (:mod:`.global_rows`).

    q, k, v: (B, H, T, Dh); idx, valid: (B, G). An invalid slot has ``lse = +inf``.
    """
    rows = global_rows(gather_tokens(q, idx), k, v, idx, valid, key_padding_mask, causal, scale, accum_dtype(q.dtype))
    return rows.out, rows.lse                                              # (B, H, G, Dh), (B, H, G)


def _launch_forward(q, k, v, window, idx, valid, key_padding_mask, causal, scale, block_m, block_n):
    """The kernel plus the global rows: out (B, H, T, Dh) and lse (B, H, T) float32 (natural log,
    +inf for a row with no key); q, k, v contiguous."""
    B, H, T, Dh = q.shape
    G = idx.shape[1]
    pad = (key_padding_mask if key_padding_mask is not None
           else torch.zeros(B, T, dtype=torch.bool, device=q.device)).to(torch.int8).contiguous()
    block_m, block_n, block_d = _blocks(q, Dh, block_m, block_n)
    out = torch.empty_like(q)
    lse2 = torch.empty(B, H, T, dtype=torch.float32, device=q.device)     # log2 units
    grid = (triton.cdiv(T, block_m), B * H)
    _jitted[grid](q, k, v, out, lse2, pad, idx.to(torch.int32).contiguous(), valid.to(torch.int8).contiguous(),
                  q.stride(0), q.stride(1), q.stride(2), H, T, Dh, G, window,
                  scale * LOG2E,                                            # exp(x) = exp2(x * LOG2E)
                  CAUSAL=bool(causal), HAS_PAD=key_padding_mask is not None,
                  PRECISION="ieee" if q.dtype == torch.float32 else None,
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_G=16)
    lse = lse2.div_(LOG2E)                                                 # (B, H, T) natural log; +inf stays
    if G:                                                                  # global rows: one G x T pass
        rows, lse_rows = global_rows_forward(q, k, v, idx, valid, key_padding_mask, causal, scale)
        out = scatter_rows(out, idx, valid, rows)                          # (B, H, T, Dh)
        lse = scatter_rows(lse[..., None], idx, valid, lse_rows[..., None])[..., 0].contiguous()  # (B, H, T)
    return out, lse


class TritonHybridFunction(torch.autograd.Function):
    """Forward: the kernel, saving only q, k, v, out and lse. Backward: :func:`hybrid_backward`."""

    @staticmethod
    def forward(ctx, q, k, v, window, idx, valid, key_padding_mask, causal, scale, block_m, block_n):
        out, lse = _launch_forward(q, k, v, window, idx, valid, key_padding_mask, causal, scale,
                                   block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse, idx, valid, key_padding_mask)
        ctx.opts = dict(window=window, causal=causal, scale=scale)
        bm, bn, bd = _blocks(q, q.shape[-1], block_m, block_n)
        cap = 64 if bd <= 64 else (32 if bd <= 128 else 16)              # backward tiles hold dk, dv too
        ctx.blocks = (min(bm, cap), min(bn, cap))
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, idx, valid, key_padding_mask = ctx.saved_tensors
        o = ctx.opts
        dq, dk, dv = hybrid_backward(q, k, v, out, lse, dout, o["window"], idx, valid, key_padding_mask,
                                     causal=o["causal"], scale=o["scale"],
                                     block_m=ctx.blocks[0], block_n=ctx.blocks[1])
        return dq, dk, dv, None, None, None, None, None, None, None, None


def triton_hybrid_forward(q: Tensor, k: Tensor, v: Tensor, window: int,
                          global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                          causal: bool = False, scale: Optional[float] = None,
                          block_m: Optional[int] = None, block_n: Optional[int] = None):
    """Output (B, H, T, Dh) and per-row log-sum-exp (B, H, T) float32 of the scores over each row's
    allowed keys (natural log; +inf for a row with no key). Differentiable in q, k, v (not in lse)."""
    call = attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale)
    block_m, block_n = _check_tiles(block_m, block_n)
    _refuse(call)
    return triton_forward_lse(call, block_m=block_m, block_n=block_n)


def triton_hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                            global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                            causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                            block_m: Optional[int] = None, block_n: Optional[int] = None) -> Tensor:
    """docs/spec.md attention with the Triton kernel. q, k, v: (B, H, T, Dh) -> (B, H, T, Dh).

    Differentiable: the backward pass recomputes the probabilities from the saved per-row
    log-sum-exp (:mod:`.triton_backward`), so training keeps O(T) memory too.
    """
    call = attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                          return_weights=return_weights)
    block_m, block_n = _check_tiles(block_m, block_n)
    _refuse(call)
    return triton_forward_lse(call, block_m=block_m, block_n=block_n)[0]


def _check_tiles(block_m, block_n):
    """Tile sizes: None (the default) or an int >= 16."""
    return tuple(None if b is None else check_int(name, b, 16) for name, b in (("block_m", block_m), ("block_n", block_n)))


def _refuse(call: AttentionCall) -> None:
    """A ValueError when :func:`triton_why_not` says the kernel cannot run this call."""
    reason = triton_why_not(call.q, call.needs_grad, call.return_weights, call.dropout_p > 0)
    if reason is not None:
        raise ValueError(f"backend='triton' cannot run here: {reason}")


def triton_forward(call: AttentionCall) -> Tensor:
    """:func:`triton_hybrid_attention` of a validated call that :func:`triton_why_not` accepts: (B, H, T, Dh)."""
    return triton_forward_lse(call)[0]


def triton_forward_lse(call: AttentionCall, *, block_m: Optional[int] = None,
                       block_n: Optional[int] = None):
    """Out (B, H, T, Dh) and lse (B, H, T) float32 of a validated call (see :func:`triton_hybrid_forward`)."""
    B, H, T, Dh = call.q.shape
    if call.empty:                                                         # B = 0 or H = 0: no tile to run
        return call.empty_result(), call.q.new_zeros(B, H, T, dtype=torch.float32)
    q, k, v = (x.contiguous() for x in (call.q, call.k, call.v))           # one (B, H, T, Dh) layout
    idx, valid = call.slots                                                # (B, G), (B, G)
    return TritonHybridFunction.apply(q, k, v, call.reach, idx, valid, call.key_padding_mask, call.causal,
                                      call.scale, block_m, block_n)
