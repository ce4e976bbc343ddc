"""The masked softmax every implementation shares, the log-sum-exp of a row, and the dtype of both.

``masked_softmax(scores, allowed)`` is the one softmax of the course: a probability of exactly 0
wherever ``allowed`` is False, and a row of zeros (never NaN) where nothing is allowed.

A backward pass that recomputes the probabilities keeps one number per row, its log-sum-exp
(:func:`row_lse`), and gets them back as ``P = exp(s - lse)`` (:func:`probs_from_lse`). A row with
no allowed key (a padded query, an invalid global slot) has ``lse = +inf`` everywhere in ``tutor``
(docs/spec.md): then ``exp(s - lse) = exp(-inf) = 0`` exactly, for a masked score (``-inf``) and a
finite one alike, with no guard. FlashAttention stores the same. (``-inf``, the plain log-sum-exp
of nothing, would give ``exp(s + inf) = inf`` and then NaN.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LOG2E", "accum_dtype", "masked_softmax", "row_lse", "probs_from_lse"]

#: ``log2(e)``: ``exp(x) = exp2(x * LOG2E)``, and a log2-unit log-sum-exp divided by it is natural
LOG2E = math.log2(math.e)


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


def row_lse(scores: Tensor) -> Tensor:
    """Log-sum-exp of masked score rows (..., n) -> (...): ``+inf`` for a row with no allowed key.

    ``scores`` hold ``-inf`` where a key is not allowed. :func:`probs_from_lse` turns the result
    back into the row's probabilities, and into exact zeros on an empty row.
    """
    lse = torch.logsumexp(scores, dim=-1)                                  # (...,); -inf for an empty row
    return lse.masked_fill(lse == float("-inf"), float("inf"))          # out of place: autograd keeps lse


def probs_from_lse(scores: Tensor, lse: Tensor, *, inplace: bool = False) -> Tensor:
    """Probabilities ``exp(scores - lse)`` (..., n) from masked scores (..., n) and their lse (...).

    Exactly 0 where a score is ``-inf`` and on a whole row with ``lse = +inf`` (no allowed key):
    no NaN, no guard. ``inplace=True`` overwrites ``scores`` (a recomputed chunk the caller owns,
    outside autograd: the log-sum-exp of ``scores`` may have saved them).
    """
    shift = lse.unsqueeze(-1)                                              # (..., 1)
    if inplace:
        return scores.sub_(shift).exp_()
    return torch.exp(scores - shift)                                       # (..., n)
