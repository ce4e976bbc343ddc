"""FlexAttention backend: the docs/spec.md rule as a ``mask_mod``, a sparse ``BlockMask``, one fused kernel.

``torch.nn.attention.flex_attention`` runs attention tile by tile (128 x 128) and skips every tile
its ``BlockMask`` marks empty. The block mask and the ``global_first`` layout (the G global tokens
gathered in front of the sequence, so they fill one row and one column of tiles instead of
spoiling the band) are built and cached in :mod:`.block_masks`; this module runs the kernel:

1. gather the global tokens' q, k, v in front: (B, H, Gp + T, Dh);
2. one call of the compiled ``flex_attention`` with the cached block mask;
3. write the front rows (the global rows) back to their places (:func:`write_global_rows`).

Computing the global rows separately would need the softmax statistics that CPU flex cannot
return in torch 2.13. Values of padded keys are zeroed first: a masked score gets probability 0,
but ``0 * NaN`` inside the kernel's ``P @ V`` would still be NaN.
"""
from __future__ import annotations

import shutil
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

from ..masks import MaskMod
from .call import AttentionCall, attention_call
from .block_masks import flex_plan
from .fused_limits import fused_why_not
from .global_tokens import gather_tokens, write_global_rows

RECOMPILE_LIMIT = 64          #: compiled variants (shape x dtype x rule) allowed before dynamo gives up


def flex_why_not(q: Tensor, needs_grad: bool, return_weights: bool, dropout: bool = False) -> Optional[str]:
    """Why the flex backend cannot run these inputs (None when it can)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs torch >= 2.5)"
    reason = fused_why_not("FlexAttention", q, return_weights, dropout)
    if reason is not None:
        return reason
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


def flex_hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                          global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                          causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                          layout: str = "global_first", dilation: int = 1,
                          pattern: Optional[MaskMod] = None) -> Tensor:
    """docs/spec.md attention with compiled FlexAttention. q, k, v: (B, H, T, Dh) -> (B, H, T, Dh).

    ``dilation`` / ``pattern`` widen the local term as in :func:`tutor.masks.hybrid_mask`;
    ``layout`` as in :func:`tutor.attention.block_masks.flex_plan`.
    """
    call = attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                          return_weights=return_weights, dilation=dilation, pattern=pattern)
    reason = flex_why_not(q, call.needs_grad, call.return_weights)
    if reason is not None:
        raise ValueError(f"backend='flex' cannot run here: {reason}")
    return flex_forward(call, layout=layout)


def flex_forward(call: AttentionCall, *, layout: str = "global_first") -> Tensor:
    """:func:`flex_hybrid_attention` of a validated call that :func:`flex_why_not` accepts: (B, H, T, Dh)."""
    if call.empty:                                                         # B = 0 or H = 0: no tile to run
        return call.empty_result()
    q, k, v, key_padding_mask = call.q, call.k, call.v, call.key_padding_mask
    B, H, T, Dh = q.shape
    block_mask, idx, valid, Gp = flex_plan(B, T, call.reach, call.global_mask, key_padding_mask, call.causal,
                                           q.device, layout, dilation=call.dilation, pattern=call.pattern)
    if key_padding_mask is not None:                                       # padded values: exact 0
        v = v.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    G = idx.shape[1]
    if Gp:
        idx_p = torch.zeros(B, Gp, dtype=idx.dtype, device=q.device)
        idx_p[:, :G] = idx
        q, k, v = (torch.cat([gather_tokens(x, idx_p), x], dim=2) for x in (q, k, v))  # (B, H, Gp+T, Dh)
    # every new shape or rule compiles once; above dynamo's default limit (8) it would silently
    # fall back to *eager* flex_attention, which builds the full (T, T) scores
    limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
    with torch._dynamo.config.patch(recompile_limit=limit):
        out = compiled_flex()(q, k, v, block_mask=block_mask, scale=call.scale)  # (B, H, Gp+T, Dh)
    if not Gp:
        return out
    # our own buffer unless autograd tracks it: then out of place
    return write_global_rows(out[:, :, Gp:], idx, valid, out[:, :, :G], inplace=not call.needs_grad)  # (B, H, T, Dh)
