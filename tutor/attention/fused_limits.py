"""What the fused kernels (FlexAttention, the Triton kernel) cannot run, in one place.

Both never materialize the (T, T) weights, have no attention dropout and take float32, float16
and bfloat16 only; each backend's ``why_not`` probe asks :func:`fused_why_not` first, then adds
its own limits (compiler, device, head size).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["FUSED_DTYPES", "fused_why_not"]

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)   #: the dtypes both fused kernels take


def fused_why_not(kernel: str, q: Tensor, return_weights: bool, dropout: bool) -> Optional[str]:
    """Why ``kernel`` (its name in a message, e.g. "FlexAttention") cannot run these options, or None."""
    if return_weights:
        return f"{kernel} never materializes the (T, T) weights; use return_weights=False"
    if dropout:
        return f"{kernel} has no attention dropout"
    if q.dtype not in FUSED_DTYPES:
        return f"{kernel} supports float32, float16 and bfloat16, not {q.dtype}"
    return None
