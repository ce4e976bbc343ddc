"""The masked softmax every implementation shares, and the dtype its statistics use.

``masked_softmax(scores, allowed)`` is the one softmax of the course: a probability of exactly 0
wherever ``allowed`` is False, and a row of zeros (never NaN) where nothing is allowed.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["accum_dtype", "masked_softmax"]


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for scores and softmax statistics: float64 stays float64 (gradcheck), else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_softmax(scores: Tensor, allowed: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the allowed entries of ``scores`` (float32), exactly 0 elsewhere.

    A row with no allowed entry gives all zeros rather than NaN: we never compute ``-inf - -inf``.
    ``allowed`` broadcasts against ``scores``.
    """
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(scores - row_max)                       # exp(-inf) = 0 where not allowed
    denom = p.sum(dim=dim, keepdim=True)
    return p / torch.where(denom > 0, denom, torch.ones_like(denom))

