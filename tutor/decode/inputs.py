"""The input checks :mod:`tutor.decode` adds to the shared validators of :mod:`tutor.arguments`.

Each raises a ``TypeError`` (wrong kind of thing) or ``ValueError`` (wrong value or shape) whose
message names the argument and shows what it got; counts, windows, scales and heads tensors are
judged by :mod:`tutor.arguments`, exactly as every other public function of the course judges them.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from ..arguments import check_heads, check_int, check_scale


def check_optional_window(value) -> Optional[int]:
    """``window`` of a decoder layer: an int >= 0, or None for full (causal) attention."""
    return None if value is None else check_int("window", value, 0)


def check_kv_pair(k, v) -> None:
    """``k`` and ``v`` of one chunk: both (B, H_kv, C, Dh), one dtype, one device."""
    check_heads("k", k, "(B, H_kv, C, Dh)")
    check_heads("v", v, "(B, H_kv, C, Dh)")
    if k.shape != v.shape:
        raise ValueError(f"v must have the same (B, H_kv, C, Dh) as k: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.dtype != v.dtype or k.device != v.device:
        raise TypeError(f"k and v must share dtype and device, got k {k.dtype} on {k.device}, "
                        f"v {v.dtype} on {v.device}")


def check_positions(positions, start: int, count: int) -> Tensor:
    """``positions`` of a chunk: None (= continue), or exactly ``start, start + 1, ..., start + count - 1``.

    Given as a 1-D integer tensor, a range or a list of ints, or as an int: the chunk's first position.

    A cache is fed in order, each position once: a chunk that skips ahead, goes back, or repeats a
    position the cache already holds is refused, naming what the cache expected.
    """
    expected = torch.arange(start, start + count)                          # (C,)
    if positions is None:
        return expected
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = torch.arange(positions, positions + count)            # the first position
    elif isinstance(positions, (range, list, tuple)) and \
            all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
        positions = torch.tensor(list(positions), dtype=torch.long)
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be a 1-D integer tensor, a range, a list of ints, an int or None, "
                        f"got {type(positions).__name__} {getattr(positions, 'dtype', '')}".rstrip())
    if positions.dim() != 1 or positions.numel() != count:
        raise ValueError(f"positions must have shape (C,) = ({count},) to match the chunk, "
                         f"got {tuple(positions.shape)}")
    if not torch.equal(positions.cpu().long(), expected):
        shown = positions.tolist() if count <= 8 else positions[:8].tolist() + ["..."]
        raise ValueError(f"positions must continue the cache in order, each once: expected "
                         f"{start}..{start + count - 1} (the cache holds 0..{start - 1}), got {shown}")
    return expected


def check_sink_logits(sink_logits, H: int) -> Optional[Tensor]:
    """Learned sink logits: None, or a floating (H,) tensor, one logit per query head."""
    if sink_logits is None:
        return None
    if not isinstance(sink_logits, Tensor) or not sink_logits.is_floating_point():
        raise TypeError(f"sink_logits must be a floating tensor of shape (H,) = ({H},) or None, "
                        f"got {type(sink_logits).__name__} {getattr(sink_logits, 'dtype', '')}".rstrip())
    if tuple(sink_logits.shape) != (H,):
        raise ValueError(f"sink_logits must have shape (H,) = ({H},), one per query head, "
                         f"got {tuple(sink_logits.shape)}")
    return sink_logits


def scale_or_default(scale, Dh: int) -> float:
    """``scale`` of the scores, checked (:func:`tutor.arguments.check_scale`); None gives ``1 / sqrt(Dh)``."""
    scale = check_scale(scale)
    return 1.0 / math.sqrt(Dh) if scale is None else scale


def check_softcap(softcap) -> Optional[float]:
    """Gemma 2's logit soft-cap: None, or a positive finite real number (bool: TypeError)."""
    if softcap is None:
        return None
    if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a positive number or None, got {type(softcap).__name__} {softcap!r}")
    if not (math.isfinite(float(softcap)) and softcap > 0):
        raise ValueError(f"softcap must be a positive finite number or None, got {softcap!r}")
    return float(softcap)
