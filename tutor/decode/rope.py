"""Rotary position embeddings (RoPE), the rotate-half form of Llama, Mistral, Gemma and gpt-oss.

Channel pair ``(c, c + Dh/2)`` of a query or key at position ``p`` is rotated by the angle
``p * base ** (-2c / Dh)``. A rotated query at ``i`` dotted with a rotated key at ``j`` depends on
``i - j`` only, which is why a cache may hold keys rotated once, at their absolute position.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_rope"]


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate x (B, H, T, Dh) by the (T,) integer ``positions``; Dh must be even. Returns x's shape and dtype."""
    Dh = x.shape[-1]
    if Dh % 2:
        raise ValueError(f"x must have an even head dimension Dh for RoPE, got shape {tuple(x.shape)}")
    half = Dh // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64, device=x.device) / half)  # (Dh/2,)
    angles = positions.to(x.device, torch.float64)[:, None] * inv_freq[None, :]           # (T, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)                         # (T, Dh/2)
    x1, x2 = x[..., :half], x[..., half:]                                                  # (B, H, T, Dh/2)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)                  # (B, H, T, Dh)
