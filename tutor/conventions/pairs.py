"""Which (query, key) pairs a library setting allows, from each library's documented rule.

Every function returns a bool ``(T, T)`` tensor, True where query ``i`` may read key ``j`` (the
orientation of :func:`tutor.masks.hybrid_mask`), for one sequence without padding. They are written
from the libraries' own words (linked in :data:`tutor.conventions.CONVENTIONS`); the tests run
transformers and local-attention and check these against them, and check the converters of
:mod:`.windows` against :func:`tutor.masks.hybrid_mask`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..arguments import check_flag, check_int

__all__ = ["flash_pairs", "longformer_pairs", "local_attention_pairs", "natten_pairs",
           "sliding_window_pairs", "bigbird_band_pairs"]


def _distance(name: str, value, T: int, minimum: int) -> int:
    """A distance in positions, checked (an int >= ``minimum``) and capped at ``T``: no two positions of
    a length-T sequence are farther apart, so a larger value allows the same pairs (and 10**30 does
    not overflow a tensor). ``-1`` (flash-attn's "no limit") stays -1."""
    value = check_int(name, value, minimum)
    return value if value < 0 else min(value, T)


def _grid(T: int):
    T = check_int("T", T, 1)
    i = torch.arange(T)[:, None]                                          # (T, 1) queries
    j = torch.arange(T)[None, :]                                          # (1, T) keys
    return i, j


def flash_pairs(T: int, left: int, right: int, causal: bool = False) -> Tensor:
    """flash-attn ``window_size=(left, right)``: keys ``i - left .. i + right`` inclusive, -1 = no limit."""
    i, j = _grid(T)
    left, right = _distance("left", left, T, -1), _distance("right", right, T, -1)
    causal = check_flag("causal", causal)
    ok = torch.ones(T, T, dtype=torch.bool)
    if left >= 0:
        ok &= j >= i - left
    if right >= 0:
        ok &= j <= i + right
    if causal:
        ok &= j <= i
    return ok                                                             # (T, T)


def longformer_pairs(T: int, attention_window: int) -> Tensor:
    """Longformer's local attention: ``attention_window // 2`` keys on each side (no global token)."""
    i, j = _grid(T)
    return (i - j).abs() <= _distance("attention_window", attention_window, 2 * T, 1) // 2   # (T, T)


def local_attention_pairs(T: int, window_size: int, look_backward: int = 1, look_forward: int = 1,
                          exact_windowsize: bool = False, causal: bool = False) -> Tensor:
    """lucidrains' ``LocalAttention``: buckets of ``window_size``; query bucket ``q`` reads key buckets
    ``q - look_backward .. q + look_forward``, cut to ``|i - j| <= window_size * look`` when exact.

    ``T`` must be a multiple of ``window_size`` (the library asserts it unless ``autopad``).
    """
    i, j = _grid(T)
    ws = check_int("window_size", window_size, 1)
    if T % ws:
        raise ValueError(f"T={T} must be a multiple of window_size={ws} (LocalAttention asserts it)")
    if causal:
        look_forward = 0
    bq, bk = i // ws, j // ws                                             # bucket of query, of key
    ok = (bk >= bq - look_backward) & (bk <= bq + look_forward)           # (T, T) whole buckets
    if causal:
        ok &= j <= i
    if exact_windowsize:
        ok &= (i - j <= ws * look_backward) & (j - i <= ws * look_forward)
    return ok


def natten_pairs(T: int, kernel_size: int, causal: bool = False) -> Tensor:
    """NATTEN 1-D neighbourhood (odd ``kernel_size``, dilation 1): ``kernel_size`` keys for *every* query.

    The neighbourhood ``[i - k//2, i + k//2]`` is shifted inward at the ends, so a query near the
    start still reads ``kernel_size`` keys. Causal: the ``kernel_size`` keys up to and including ``i``.
    """
    i, j = _grid(T)
    k = check_int("kernel_size", kernel_size, 1)
    if k % 2 == 0 or k > T:
        raise ValueError(f"kernel_size must be odd and <= T={T}, got {k}")
    if causal:
        return (j <= i) & (j > i - k)                                     # (T, T)
    start = (i - k // 2).clamp(0, T - k)                                  # (T, 1) first key, shifted inward
    return (j >= start) & (j < start + k)                                 # (T, T)


def sliding_window_pairs(T: int, sliding_window: int) -> Tensor:
    """Mistral/Gemma causal ``sliding_window``: ``j <= i`` and ``j > i - sliding_window`` (the query counts)."""
    i, j = _grid(T)
    return (j <= i) & (j > i - _distance("sliding_window", sliding_window, T + 1, 1))   # (T, T)


def bigbird_band_pairs(T: int, block_size: int) -> Tensor:
    """BigBird's sliding part: query block ``q`` reads key blocks ``q - 1 .. q + 1`` (no global, no random)."""
    i, j = _grid(T)
    b = _distance("block_size", block_size, T, 1)
    return ((i // b) - (j // b)).abs() <= 1                              # (T, T)
