"""Exercises for notebook 01, dense masked attention: the hybrid mask, counting, a safe softmax."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..attention import dense_attention
from ..attention.softmax import masked_softmax
from ..costs import count_allowed
from ..masks import hybrid_mask
from .cases import HYBRID_CASES, PADDED_CASES, Case
from .compare import compare_int, compare_pairs
from .problem import AttentionProblem, FunctionProblem

NUMBER = "01"
NOTEBOOK = "01_dense_masked_attention"
TITLE = "Exercises 01 · Dense masked attention"
INTRO = """The reference implementation of hybrid attention is dense: build the full `(T, T)` table
of allowed pairs, mask the scores, take one softmax. Global tokens are *symmetric*: a global row
reads every key, and every query reads the global keys. Each pair counts once."""

_MASK_BUILDERS = ("tutor.masks.hybrid_mask", "tutor.masks.hybrid_mask_mod", "tutor.masks.generate_global")


def build_hybrid_mask_reference(T: int, window: int, global_mask: Tensor) -> Tensor:
    """(B, T, T) bool: local window or global row or global column."""
    return hybrid_mask(T, window, global_mask)


def count_allowed_pairs_reference(T: int, window: int, global_positions: List[int]) -> int:
    """Allowed (query, key) pairs of one sequence with global tokens at ``global_positions``."""
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, list(global_positions)] = True
    return count_allowed(hybrid_mask(T, window, gm))


def dense_masked_attention_reference(q, k, v, window, global_mask, key_padding_mask):
    """The attention of docs/spec.md, non-causal: (B, H, T, Dh)."""
    return dense_attention(q, k, v, window, global_mask, key_padding_mask)


def _softmax_inputs(seed: int, B: int, H: int, T: int, spread: float, heads_share: bool,
                    dtype: torch.dtype = torch.float32):
    def scores():
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(B, H, T, T, generator=g) * spread).to(dtype)    # (B, H, T, T)

    def allowed():
        g = torch.Generator().manual_seed(seed + 1)
        ok = torch.rand(B, 1 if heads_share else H, T, T, generator=g) < 0.5
        ok[..., 1, :] = False                                               # a row with no allowed key
        return ok
    return {"scores": scores, "allowed": allowed}


def compare_probabilities(got, expected: Tensor, case) -> Optional[str]:
    """Masked-softmax probabilities; a NaN is traced to its cause: an empty row, or an overflow."""
    if isinstance(got, Tensor) and got.shape == expected.shape and got.is_floating_point() \
            and bool(torch.isnan(got).any()):
        index = torch.nonzero(torch.isnan(got))[0].tolist()
        allowed = case.tensors()["allowed"].expand(expected.shape)          # (B, H, T, T)
        if bool(allowed[tuple(index[:-1])].any()):
            return (f"your result contains NaN (first at index {index}) in a row that HAS allowed keys: "
                    f"a large score overflowed. exp(x) is inf beyond x = 88 in float32 (x = 11 in "
                    f"float16) and inf / inf is NaN: subtract the row's largest allowed score before exp "
                    f"(torch.softmax does that for you).")
        return (f"your result contains NaN (first at index {index}) in query row {index[-2]}, which has "
                f"no allowed key: a softmax over nothing but -inf is 0/0. That row should be all zeros.")
    return compare_pairs(got, expected, case)


class BuildHybridMask(FunctionProblem):
    id, title, _name = "01.q1", "The hybrid mask: local window + global tokens", "build_hybrid_mask"
    _prompt = """Write `build_hybrid_mask(T, window, global_mask)`. `global_mask` is a `(B, T)` bool tensor,
True at global tokens. Return a `(B, T, T)` bool tensor, True where query `i` may attend key `j`:
`|i - j| <= window`, **or** `i` is global (a global row reads everything), **or** `j` is global
(everyone reads a global key). Sequences may have different numbers of global tokens."""
    _solution = '''def build_hybrid_mask(T, window, global_mask):
    """(B, T, T) bool: local window, plus global rows and global columns."""
    i = torch.arange(T)[:, None]                          # (T, 1)
    j = torch.arange(T)[None, :]                          # (1, T)
    local = (i - j).abs() <= window                       # (T, T)
    g = global_mask                                       # (B, T)
    return local[None] | g[:, :, None] | g[:, None, :]    # (B, T, T): rows | columns
'''
    _hints = ("Start from the local (T, T) mask, then add the global part with `|` (logical or).",
              "`global_mask[:, :, None]` is (B, T, 1): True on whole *rows* of global queries. "
              "`global_mask[:, None, :]` is (B, 1, T): True on whole *columns* of global keys.",
              "Longformer's global attention is symmetric: you need both the rows and the columns.")
    _congrats = "Rows and columns of the global tokens are full: they read everything and everyone reads them."
    _reference = build_hybrid_mask_reference
    _compare = compare_pairs
    _forbidden = _MASK_BUILDERS
    _cases = HYBRID_CASES


class CountAllowedPairs(FunctionProblem):
    id, title, _name = "01.q2", "Counting pairs without double counting", "count_allowed_pairs"
    _prompt = """Write `count_allowed_pairs(T, window, global_positions)` for **one** sequence whose
global tokens sit at the positions in the list `global_positions`. Return, as an `int`, how many
(query, key) pairs are allowed. A pair allowed by two rules (a global key inside a local window,
two global tokens) still counts **once**."""
    _solution = '''def count_allowed_pairs(T, window, global_positions):
    """Number of allowed (i, j) pairs, each counted once."""
    g = set(global_positions)
    # one test per pair, joined with `or`: a pair allowed twice is still counted once
    return sum(1 for i in range(T) for j in range(T)
               if abs(i - j) <= window or i in g or j in g)
'''
    _hints = ("Adding 'local pairs + global rows + global columns' counts some pairs two or three times.",
              "Think of one yes/no question per pair (i, j): is it allowed by *any* rule?",
              "A double loop over i and j with `abs(i - j) <= window or i in g or j in g` counts each "
              "pair once (or sum your hybrid mask from question 1).")
    _congrats = "A set-like rule (any of the reasons) is exactly what the softmax must see: each pair once."
    _reference = count_allowed_pairs_reference
    _compare = compare_int
    _forbidden = _MASK_BUILDERS + ("tutor.costs.hybrid_pairs",)   # the closed form counts the pairs too
    _cases = (Case("no global token", {"T": 10, "window": 2, "global_positions": []}),
              Case("global tokens inside windows", {"T": 12, "window": 2, "global_positions": [0, 5]}),
              Case("neighbouring global tokens", {"T": 20, "window": 3, "global_positions": [3, 4]}),
              Case("globals at both ends", {"T": 12, "window": 1, "global_positions": [0, 6, 11]}),
              Case("window 0", {"T": 8, "window": 0, "global_positions": [2]}),
              Case("window >= T", {"T": 7, "window": 9, "global_positions": [1]}))


class SafeMaskedSoftmax(FunctionProblem):
    id, title, _name = "01.q3", "A softmax that survives empty rows", "safe_masked_softmax"
    _prompt = """Write `safe_masked_softmax(scores, allowed)`: a softmax over the last dimension that
only uses entries where the bool tensor `allowed` is True (it broadcasts against `scores`, e.g.
`(B, 1, T, T)` against `(B, H, T, T)`). Disallowed entries must come out exactly 0, and a row with
**no** allowed entry must come out as all zeros, never NaN. Scores can be large (think 100)."""
    _solution = '''def safe_masked_softmax(scores, allowed):
    """Softmax over the last dim restricted to `allowed`; empty rows give zeros."""
    p = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # NaN on empty rows
    has_key = allowed.any(dim=-1, keepdim=True)                            # (..., T, 1)
    return torch.where(has_key, p, torch.zeros_like(p))                    # (..., T, T)
'''
    _hints = ("Filling disallowed scores with -inf makes their exp exactly 0. What happens to a row "
              "that is -inf everywhere?",
              "softmax of an all -inf row is 0/0 = NaN. Filling with -1e9 instead gives a uniform row "
              "over keys that are not allowed: also wrong.",
              "Compute the softmax with -inf, then replace the rows where `allowed.any(-1)` is False "
              "by zeros (`torch.where`).")
    _congrats = "No NaN, no probability on a forbidden key, and it works in float16 too."
    _reference = masked_softmax
    _compare = compare_probabilities
    _cases = (Case("one mask for all heads: scores (2, 2, 6, 6), allowed (2, 1, 6, 6)",
                   _softmax_inputs(21, 2, 2, 6, 1.0, True)),
              Case("a mask per head: scores (1, 3, 5, 5), allowed (1, 3, 5, 5)",
                   _softmax_inputs(22, 1, 3, 5, 1.0, False)),
              Case("large scores: scores (1, 2, 7, 7) of size ~100, allowed (1, 1, 7, 7)",
                   _softmax_inputs(23, 1, 2, 7, 60.0, True)),
              Case("float16 scores (2, 2, 6, 6) of size ~10, allowed (2, 1, 6, 6)",
                   _softmax_inputs(24, 2, 2, 6, 6.0, True, torch.float16)))


class DenseMaskedAttention(AttentionProblem):
    id, title, _name = "01.q4", "Dense masked attention with padding", "dense_masked_attention"
    _prompt = """Write `dense_masked_attention(q, k, v, window, global_mask, key_padding_mask)`.
`q, k, v` are `(B, H, T, Dh)`; both masks are `(B, T)` bool (`key_padding_mask` True = padding).
Return `(B, H, T, Dh)`: `softmax(q·kᵀ / sqrt(Dh))` over the allowed keys, times `v`. Padded keys
are never read, and padded queries (and any query with no allowed key) output zeros. You may use
`tutor.masks.hybrid_mask` and your `safe_masked_softmax`."""
    _solution = '''from tutor.masks import hybrid_mask

def dense_masked_attention(q, k, v, window, global_mask, key_padding_mask):
    """(B, H, T, Dh): hybrid local + global attention, computed densely."""
    T, Dh = q.shape[-2], q.shape[-1]
    allowed = hybrid_mask(T, window, global_mask, key_padding_mask)[:, None]  # (B, 1, T, T)
    scores = q @ k.transpose(-1, -2) / Dh ** 0.5                            # (B, H, T, T)
    return safe_masked_softmax(scores, allowed) @ v                         # (B, H, T, Dh)
'''
    _hints = ("Three steps: the (B, 1, T, T) mask of allowed pairs, the scaled scores, the masked "
              "softmax times v.",
              "`hybrid_mask(T, window, global_mask, key_padding_mask)` is (B, T, T); add a head axis "
              "with `[:, None]` so it broadcasts over H.",
              "Scale the scores by 1 / sqrt(Dh) before the softmax, and use a softmax that gives zero "
              "rows (question 3) so fully padded rows do not become NaN.")
    _congrats = "This is the reference every faster implementation in the course must match."
    _reference = dense_masked_attention_reference
    _cases = PADDED_CASES


QUESTIONS = (BuildHybridMask(), CountAllowedPairs(), SafeMaskedSoftmax(), DenseMaskedAttention())
