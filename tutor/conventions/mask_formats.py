"""Our masks in other APIs' formats: SDPA, FlexAttention, and Longformer's two integer masks.

The traps are in the meaning of True and of the integers:

* ``scaled_dot_product_attention(attn_mask=bool)``: True = *may* attend (ours). But
  ``nn.MultiheadAttention(key_padding_mask=..., attn_mask=bool)``: True = *may not*. A float mask is
  added to the scores (``-inf`` = never).
* FlexAttention's ``mask_mod(b, h, q_idx, kv_idx)``: True = may attend, exactly our mask mods.
* Longformer: ``attention_mask`` 1 = real token, 0 = padding (the opposite of our
  ``key_padding_mask``); ``global_attention_mask`` 1 = global, 0 = local, both integer tensors.
* Which tokens are global is a modelling choice: ``[CLS]`` (``<s>``) for classification,
  every question token for question answering (:func:`qa_global_attention_mask`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..arguments import check_int, check_window
from ..masks import MaskMod, hybrid_mask, hybrid_mask_mod

__all__ = ["to_sdpa_mask", "to_flex_mask_mod", "to_longformer_masks", "from_longformer_masks",
           "qa_global_attention_mask", "cls_global_attention_mask"]


def to_sdpa_mask(T: int, window: int, global_mask: Optional[Tensor] = None,
                 key_padding_mask: Optional[Tensor] = None, *, causal: bool = False) -> Tensor:
    """``attn_mask`` for ``F.scaled_dot_product_attention``: bool (B, 1, T, T), True = may attend.

    A row with no allowed key (a padded query) is NaN in older PyTorch releases and some fused
    kernels, zeros in others: zero those rows yourself afterwards.
    """
    return hybrid_mask(T, window, global_mask, key_padding_mask, causal=causal)[:, None]   # (B, 1, T, T)


def to_flex_mask_mod(window: int, global_mask: Optional[Tensor] = None,
                     key_padding_mask: Optional[Tensor] = None, *, causal: bool = False) -> MaskMod:
    """FlexAttention's ``mask_mod``: ours already is one (same argument order, True = may attend)."""
    check_window(window)
    return hybrid_mask_mod(window, global_mask, key_padding_mask, causal=causal)


def _flag(name: str, mask: Optional[Tensor]) -> Optional[Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a (B, T) tensor or None, got {got}")
    return mask


def to_longformer_masks(global_mask: Optional[Tensor] = None,
                        key_padding_mask: Optional[Tensor] = None, *, T: Optional[int] = None
                        ) -> Tuple[Tensor, Tensor]:
    """``(attention_mask, global_attention_mask)``: long (B, T) each, as ``LongformerModel`` wants them.

    ``attention_mask`` is 1 on real tokens and 0 on padding; ``global_attention_mask`` 1 on global
    tokens. Give ``T`` when both masks are None (then B = 1).
    """
    g, p = _flag("global_mask", global_mask), _flag("key_padding_mask", key_padding_mask)
    shape = next((m.shape for m in (g, p) if m is not None), None)
    if shape is None:
        if T is None:
            raise ValueError("to_longformer_masks needs T when global_mask and key_padding_mask are both None")
        shape = (1, check_int("T", T, 1))
    device = next((m.device for m in (g, p) if m is not None), None)
    pad = p.bool() if p is not None else torch.zeros(shape, dtype=torch.bool, device=device)
    glob = g.bool() if g is not None else torch.zeros(shape, dtype=torch.bool, device=device)
    if pad.shape != glob.shape:
        raise ValueError(f"global_mask and key_padding_mask must have the same shape, got {tuple(glob.shape)} "
                         f"and {tuple(pad.shape)}")
    return (~pad).long(), glob.long()                                     # (B, T), (B, T)


def longformer_layer_inputs(global_mask: Tensor, key_padding_mask: Tensor) -> dict:
    """The mask keywords ``LongformerModel`` hands each ``LongformerSelfAttention`` layer.

    global_mask, key_padding_mask: bool (B, T). ``attention_mask`` is float (B, T): the float32
    minimum on padding, the maximum on (unpadded) global tokens, 0 elsewhere; the flags are read
    from it as the model does. Use with ``layer(hidden_states, **longformer_layer_inputs(g, p))``.
    """
    glob = _flag("global_mask", global_mask).bool()
    pad = _flag("key_padding_mask", key_padding_mask).bool()
    if pad.shape != glob.shape:
        raise ValueError(f"global_mask and key_padding_mask must have the same shape, got {tuple(glob.shape)} "
                         f"and {tuple(pad.shape)}")
    big = torch.finfo(torch.float32)
    internal = torch.zeros(pad.shape, device=pad.device).masked_fill(pad, big.min).masked_fill(glob & ~pad, big.max)
    return {"attention_mask": internal, "is_index_masked": internal < 0,                # (B, T) each
            "is_index_global_attn": internal > 0, "is_global_attn": bool((internal > 0).any())}


def from_longformer_masks(attention_mask: Optional[Tensor] = None,
                          global_attention_mask: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """``(global_mask, key_padding_mask)`` (bool (B, T) or None) from Longformer's integer masks.

    Longformer merges them as ``attention_mask * (global_attention_mask + 1)``: a padded position is
    never global, whatever ``global_attention_mask`` says there.
    """
    a = _flag("attention_mask", attention_mask)
    g = _flag("global_attention_mask", global_attention_mask)
    pad = None if a is None else a == 0
    glob = None if g is None else g != 0
    if glob is not None and pad is not None:
        if glob.shape != pad.shape:
            raise ValueError(f"attention_mask and global_attention_mask must have the same shape, got "
                             f"{tuple(pad.shape)} and {tuple(glob.shape)}")
        glob = glob & ~pad
    return glob, pad


def qa_global_attention_mask(input_ids: Tensor, sep_token_id: int) -> Tensor:
    """Longformer's choice for question answering: every token before the first ``sep_token_id`` is global.

    ``input_ids`` (B, T) laid out ``<s> question </s></s> context </s> <pad>...``: the ``<s>`` token and
    the question get global attention, the separators and the context do not. Returns long (B, T).
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (B, T) tensor, got {got}")
    is_sep = input_ids == sep_token_id                                     # (B, T)
    if not bool(is_sep.any(dim=1).all()):
        raise ValueError(f"every sequence of input_ids needs a separator {sep_token_id} after its question")
    first = is_sep.int().argmax(dim=1, keepdim=True)                       # (B, 1) first separator
    return (torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] < first).long()   # (B, T)


def cls_global_attention_mask(input_ids: Tensor) -> Tensor:
    """Longformer's choice for classification: only the first token (``<s>`` / ``[CLS]``) is global. Long (B, T)."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (B, T) tensor, got {got}")
    g = torch.zeros(input_ids.shape, dtype=torch.long, device=input_ids.device)
    g[:, 0] = 1
    return g                                                              # (B, T)
