"""Attention masks as tiny predicates, in the attention-gym spirit.

A *mask mod* is a function ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` that says whether
query ``q_idx`` may attend key ``kv_idx`` in batch element ``b`` and head ``h``. The arguments are
integer tensors that broadcast against each other, so the same predicate can be evaluated on a
whole grid at once (:func:`create_mask`) or handed to FlexAttention one element at a time.

Factories ``generate_<name>(params)`` build the predicates; :func:`and_masks` and :func:`or_masks`
combine them; :func:`hybrid_mask` materializes the Longformer/BigBird rule of SPEC.md:

    allowed[b, i, j] = (|i - j| <= w  or  global[b, i]  or  global[b, j])
                       and (j <= i if causal)  and  not pad[b, i]  and  not pad[b, j]
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "MaskMod", "generate_local_window", "generate_causal", "generate_causal_window",
    "generate_global", "generate_key_padding", "and_masks", "or_masks", "create_mask",
    "hybrid_mask_mod", "hybrid_mask", "count_allowed",
]


def _named(fn: MaskMod, name: str) -> MaskMod:
    fn.__name__ = name
    return fn


def generate_local_window(window: int) -> MaskMod:
    """Sliding window: ``|i - j| <= window`` (``2w + 1`` keys, fewer at the edges)."""
    def local(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window
    return _named(local, f"local_w{window}")


def generate_causal() -> MaskMod:
    """Decoder rule: a query never reads a later key (``j <= i``)."""
    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx
    return _named(causal, "causal")


def generate_causal_window(window: int) -> MaskMod:
    """Causal sliding window: ``0 <= i - j <= window``."""
    return _named(and_masks(generate_local_window(window), generate_causal()),
                  f"causal_local_w{window}")


def generate_global(global_mask: Tensor) -> MaskMod:
    """Symmetric global attention: global rows read every key, every row reads global keys.

    ``global_mask``: (B, T) bool, True where the token is global.
    """
    def global_(b, h, q_idx, kv_idx):
        return global_mask[b, q_idx] | global_mask[b, kv_idx]
    return _named(global_, "global")


def generate_key_padding(key_padding_mask: Tensor) -> MaskMod:
    """Padding: a padded key is never read and a padded query reads nothing.

    ``key_padding_mask``: (B, T) bool, True where the position is padding.
    """
    def not_padding(b, h, q_idx, kv_idx):
        return ~(key_padding_mask[b, q_idx] | key_padding_mask[b, kv_idx])
    return _named(not_padding, "not_padding")


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """A pair is allowed when every predicate allows it."""
    if not mask_mods:
        raise ValueError("and_masks needs at least one mask_mod")

    def and_mask(b, h, q_idx, kv_idx):
        result = mask_mods[0](b, h, q_idx, kv_idx)
        for mod in mask_mods[1:]:
            result = result & mod(b, h, q_idx, kv_idx)
        return result
    return _named(and_mask, " & ".join(m.__name__ for m in mask_mods))


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """A pair is allowed when any predicate allows it."""
    if not mask_mods:
        raise ValueError("or_masks needs at least one mask_mod")

    def or_mask(b, h, q_idx, kv_idx):
        result = mask_mods[0](b, h, q_idx, kv_idx)
        for mod in mask_mods[1:]:
            result = result | mod(b, h, q_idx, kv_idx)
        return result
    return _named(or_mask, " | ".join(m.__name__ for m in mask_mods))


def create_mask(mask_mod: MaskMod, B: int, T: int, device=None) -> Tensor:
    """Evaluate ``mask_mod`` on the full grid: returns bool (B, T, T), True = allowed."""
    b = torch.arange(B, device=device)[:, None, None]     # (B, 1, 1)
    h = torch.zeros((), dtype=torch.long, device=device)
    q_idx = torch.arange(T, device=device)[None, :, None]  # (1, T, 1)
    kv_idx = torch.arange(T, device=device)[None, None, :]  # (1, 1, T)
    return mask_mod(b, h, q_idx, kv_idx).expand(B, T, T).clone()  # (B, T, T)


def hybrid_mask_mod(window: int, global_mask: Optional[Tensor] = None,
                    key_padding_mask: Optional[Tensor] = None, *, causal: bool = False) -> MaskMod:
    """The SPEC.md rule as one predicate: (local | global) & causal & not padding."""
    mod = generate_local_window(window)
    if global_mask is not None:
        mod = or_masks(mod, generate_global(global_mask))
    if causal:
        mod = and_masks(mod, generate_causal())
    if key_padding_mask is not None:
        mod = and_masks(mod, generate_key_padding(key_padding_mask))
    return mod


def _check_flag(name: str, mask: Optional[Tensor], T: int) -> Optional[Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape (B, T) or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype} (shape {tuple(mask.shape)})")
    if mask.dim() != 2 or mask.shape[1] != T:
        raise ValueError(f"{name} must have shape (B, T={T}), got {tuple(mask.shape)}")
    return mask


def hybrid_mask(T: int, window: int, global_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, *, causal: bool = False,
                device=None) -> Tensor:
    """Materialize the hybrid local + global rule of SPEC.md.

    Returns bool (B, T, T) where B comes from the masks, or (1, T, T) when both are None;
    True means query i may attend key j. Padded query rows are all False.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"window must be a non-negative int, got {type(window).__name__} {window!r}")
    if window < 0:
        raise ValueError(f"window must be a non-negative int, got {window}")
    global_mask = _check_flag("global_mask", global_mask, T)
    key_padding_mask = _check_flag("key_padding_mask", key_padding_mask, T)
    if global_mask is not None and key_padding_mask is not None \
            and global_mask.shape[0] != key_padding_mask.shape[0]:
        raise ValueError(f"global_mask and key_padding_mask disagree on B: "
                         f"{tuple(global_mask.shape)} vs {tuple(key_padding_mask.shape)}")
    if device is None:
        device = next((m.device for m in (global_mask, key_padding_mask) if m is not None), None)
    global_mask = None if global_mask is None else global_mask.to(device)
    key_padding_mask = None if key_padding_mask is None else key_padding_mask.to(device)
    B = next((m.shape[0] for m in (global_mask, key_padding_mask) if m is not None), 1)
    mod = hybrid_mask_mod(window, global_mask, key_padding_mask, causal=causal)
    return create_mask(mod, B, T, device=device)


def count_allowed(mask: Tensor) -> int:
    """Number of allowed (query, key) pairs in a materialized bool mask."""
    return int(mask.sum().item())
