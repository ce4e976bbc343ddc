"""Input checks shared by every attention implementation.

Each check raises a ``TypeError`` (wrong kind of thing, wrong dtype) or ``ValueError`` (wrong
shape, value or device) whose message names the argument and shows what it got, so a learner
never meets a bare shape error from deep inside a matmul.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Optional

import torch
from torch import Tensor

from ..masks import check_dilation

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_window(window) -> int:
    """A non-negative Python/NumPy/0-d-tensor integer; bools and floats are refused."""
    if isinstance(window, bool) or isinstance(window, float) or \
            (isinstance(window, Tensor) and window.is_floating_point()):
        raise TypeError(f"window must be a non-negative int, got {type(window).__name__} {window!r}")
    try:
        w = operator.index(window)
    except TypeError:
        raise TypeError(f"window must be a non-negative int, got {type(window).__name__} {window!r}") from None
    if w < 0:
        raise ValueError(f"window must be a non-negative int, got {w}")
    return w


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, T, Dh), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, T, Dh), got {t.dim()}-D shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16 (float64 for gradcheck), got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q on {q.device}, k on {k.device}, v on {v.device}")
    if q.shape[:3] != k.shape[:3] or q.shape[3] != k.shape[3]:
        raise ValueError(f"k must have the same (B, H, T, Dh) as q: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if v.shape != q.shape:  # SPEC.md: q, k, v are all (B, H, T, Dh)
        raise ValueError(f"v must have the same (B, H, T, Dh) as q: q {tuple(q.shape)}, v {tuple(v.shape)}")
    if q.shape[2] == 0 or q.shape[3] == 0:
        raise ValueError(f"q must have T >= 1 and Dh >= 1, got shape {tuple(q.shape)}")


def check_flag_mask(name: str, mask: Optional[Tensor], q: Tensor) -> Optional[Tensor]:
    """``mask`` is None or a bool (B, T) tensor on q's device."""
    if mask is None:
        return None
    B, T = q.shape[0], q.shape[2]
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape (B, T) = ({B}, {T}) or None, "
                        f"got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype} with shape {tuple(mask.shape)}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"{name} must have shape (B, T) = ({B}, {T}) to match q {tuple(q.shape)}, "
                         f"got {tuple(mask.shape)}")
    if mask.device != q.device:
        raise ValueError(f"{name} must be on q's device {q.device}, got {mask.device}")
    return mask


def check_scale(scale, q: Tensor) -> float:
    """``scale`` defaults to ``1 / sqrt(Dh)``; otherwise a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__} {scale!r}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_bool(name: str, value) -> bool:
    """A real ``bool`` (``causal="no"`` or ``1`` is refused: a truthy string would mean True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")
    return value


def check_dropout(dropout_p) -> float:
    """``dropout_p`` is a real number in [0, 1)."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p must be a number in [0, 1), got {type(dropout_p).__name__} {dropout_p!r}")
    if not 0.0 <= float(dropout_p) < 1.0:                  # also refuses NaN
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return float(dropout_p)


def clamp_window(window: int, T: int, dilation: int = 1) -> int:
    """The smallest window with the same allowed pairs: a key is at most ``T - 1`` away.

    With ``dilation = d`` the local keys sit at multiples of d, so ``w * d <= T - 1`` suffices.
    A window of 10**7 at T = 10 then costs what a window of 9 costs, in every implementation.
    """
    return min(window, (T - 1) // dilation)


def check_inputs(q, k, v, window, global_mask, key_padding_mask, scale, *,
                 causal: bool = False, return_weights: bool = False, dropout_p: float = 0.0,
                 dilation: int = 1):
    """Validate the common arguments; returns ``(window, global_mask, key_padding_mask, scale)``.

    The returned window is clamped to ``(T - 1) // dilation`` (:func:`clamp_window`): the same
    pairs, bounded work. ``causal`` and ``return_weights`` must be bools, ``dropout_p`` a number
    in [0, 1), ``dilation`` a positive int.
    """
    _check_qkv(q, k, v)
    window = clamp_window(check_window(window), q.shape[2], check_dilation(dilation))
    global_mask = check_flag_mask("global_mask", global_mask, q)
    key_padding_mask = check_flag_mask("key_padding_mask", key_padding_mask, q)
    check_bool("causal", causal)
    check_bool("return_weights", return_weights)
    check_dropout(dropout_p)
    return window, global_mask, key_padding_mask, check_scale(scale, q)


def empty_result(q: Tensor, k: Tensor, v: Tensor, return_weights: bool):
    """The answer for a batch with no rows at all (B = 0 or H = 0): empty out [, empty weights].

    The output is tied to q, k, v by autograd (all gradients empty), like any other output.
    """
    B, H, T, _ = q.shape
    out = (q + k + v) * 0                                                  # (B, H, T, Dh), no element
    weights = q.new_zeros(B, H, T, T, dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)
    return (out, weights) if return_weights else out


def needs_grad(*tensors) -> bool:
    """Whether autograd will want gradients of any of ``tensors`` here (grad mode on, one requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
