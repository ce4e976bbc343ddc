"""The one door: every attention entry point checks its arguments once, into an :class:`AttentionCall`.

``dense_attention``, ``looped_attention``, ``unfold_attention``, ``hybrid_attention``,
``sparse_attention``, the backends' own entry points and the layer all start with
:func:`attention_call`. It runs the validators of :mod:`tutor.arguments` (one per argument, the same
ones the masks, costs and plots use) and returns a frozen, validated call; the implementations
(``dense_forward(call)``, ``blocked_forward(call)``, ...) take that call and never check again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ..arguments import (check_bool_mask, check_dilation, check_flag, check_pattern, check_probability,
                         check_qkv, check_scale, check_window)
from .global_tokens import global_slots
from .softmax import accum_dtype

__all__ = ["AttentionCall", "attention_call"]


@dataclass(frozen=True)
class AttentionCall:
    """One validated attention call. q, k, v: (B, H, T, Dh); the masks (B, T) bool or None.

    ``window`` is the window the caller asked for. ``reach = min(window, (T - 1) // dilation)`` is
    the window the implementations run: it allows exactly the same pairs (no key of a length-T
    sequence lies farther than T - 1, so a wider window adds nothing), and keeps the work bounded
    (``window=10**7`` at T = 10 costs what ``window=9`` costs). ``scale`` is resolved (``1 /
    sqrt(Dh)`` when the caller gave None). ``needs_grad``: grad mode was on and one of q, k, v
    requires a gradient, when the call was built.
    """
    q: Tensor
    k: Tensor
    v: Tensor
    window: int
    reach: int
    global_mask: Optional[Tensor]
    key_padding_mask: Optional[Tensor]
    causal: bool
    scale: float
    dilation: int
    dropout_p: float
    return_weights: bool
    needs_grad: bool
    pattern: Optional[Callable] = None

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(B, H, T, Dh)."""
        return tuple(self.q.shape)

    @property
    def T(self) -> int:
        return self.q.shape[2]

    @property
    def acc(self) -> torch.dtype:
        """Dtype of scores and softmax statistics (:func:`~.softmax.accum_dtype`)."""
        return accum_dtype(self.q.dtype)

    @property
    def empty(self) -> bool:
        """B = 0 or H = 0: no row to compute."""
        return self.q.numel() == 0

    @cached_property
    def slots(self) -> Tuple[Tensor, Tensor]:
        """The global tokens that count (not padding): ``idx, valid`` (B, G), computed once, when first asked."""
        B, _, T, _ = self.q.shape
        return global_slots(self.global_mask, self.key_padding_mask, B, T, self.q.device)

    def empty_result(self):
        """The answer for a batch with no rows (B = 0 or H = 0): empty out [, empty weights].

        The output is tied to q, k, v by autograd (all gradients empty), like any other output.
        """
        q, k, v = self.q, self.k, self.v
        B, H, T, _ = q.shape
        out = (q + k + v) * 0                                              # (B, H, T, Dh), no element
        weights = q.new_zeros(B, H, T, T, dtype=self.acc)                  # (B, H, T, T), no element
        return (out, weights) if self.return_weights else out


def attention_call(q: Tensor, k: Tensor, v: Tensor, window: int,
                   global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                   causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                   dropout_p: float = 0.0, dilation: int = 1, pattern: Optional[Callable] = None) -> AttentionCall:
    """Check every argument once (:mod:`tutor.arguments`) and return the validated call.

    q, k, v: (B, H, T, Dh) float tensors of one dtype and device; global_mask, key_padding_mask:
    (B, T) bool on q's device, or None. Raises a TypeError or ValueError naming the argument.
    A ``pattern`` built for other sequences (``pattern.batch_size`` != B, ``pattern.max_len`` < T)
    is a ValueError too.
    """
    check_qkv(q, k, v)
    B, _, T, Dh = q.shape
    window = check_window(window)
    dilation = check_dilation(dilation)
    global_mask = check_bool_mask("global_mask", global_mask, B, T, q.device)
    key_padding_mask = check_bool_mask("key_padding_mask", key_padding_mask, B, T, q.device)
    causal = check_flag("causal", causal)
    return_weights = check_flag("return_weights", return_weights)
    dropout_p = check_probability("dropout_p", dropout_p)
    scale = check_scale(scale)
    pattern = check_pattern(pattern)
    if pattern is not None:
        name = getattr(pattern, "__name__", "pattern")
        pb, max_len = getattr(pattern, "batch_size", None), getattr(pattern, "max_len", None)
        if pb is not None and pb != B:                                     # per-sequence data: no broadcast
            raise ValueError(f"pattern {name!r} was built for B={pb} sequences, but q has shape {tuple(q.shape)}")
        if max_len is not None and T > max_len:
            raise ValueError(f"pattern {name!r} covers positions < {max_len}, but q has shape {tuple(q.shape)}")
    return AttentionCall(
        q=q, k=k, v=v, window=window, reach=min(window, (T - 1) // dilation),
        global_mask=global_mask, key_padding_mask=key_padding_mask, causal=causal,
        scale=1.0 / math.sqrt(Dh) if scale is None else scale, dilation=dilation, dropout_p=dropout_p,
        return_weights=return_weights,
        needs_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)), pattern=pattern)
