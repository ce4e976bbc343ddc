"""Our attention inside a Hugging Face Longformer: swap every ``LongformerSelfAttention`` for ours.

:class:`LongformerSelfAttentionSwap` stands where transformers' ``LongformerSelfAttention`` stood
and takes the same call (``hidden_states`` (B, T, dim) and the masks ``LongformerModel`` prepares:
``is_index_masked`` = padding, ``is_index_global_attn`` = global tokens); inside it is a
:class:`~tutor.attention.HybridSparseAttention` built by ``from_longformer`` with the weights.
:func:`swap_longformer_attention` does it for a whole model (``LongformerModel`` or any model
holding one, e.g. ``LongformerForQuestionAnswering``), in place.

With a real checkpoint (it downloads ~600 MB once)::

    from transformers import AutoTokenizer, LongformerModel
    from tutor.interop import swap_longformer_attention
    model = LongformerModel.from_pretrained("allenai/longformer-base-4096")
    swap_longformer_attention(model, backend="auto")    # 12 layers, attention_window 512 -> w = 256
    out = model(input_ids, attention_mask=..., global_attention_mask=...).last_hidden_state

Not supported: ``output_attentions=True`` (Longformer returns its banded (B, H, T, 2w + 1 + G)
probabilities; ours are (B, H, T, T)); saving the swapped model with ``save_pretrained`` (the
parameter names changed: keep the original checkpoint and swap after loading).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..attention import HybridSparseAttention

__all__ = ["LongformerSelfAttentionSwap", "swap_longformer_attention", "count_swapped"]


class LongformerSelfAttentionSwap(nn.Module):
    """Drop-in for ``LongformerSelfAttention``: same call and return, our attention inside (``.attn``)."""

    def __init__(self, attn: HybridSparseAttention, layer_id: int = 0):
        super().__init__()
        if not isinstance(attn, HybridSparseAttention):
            raise TypeError(f"attn must be a HybridSparseAttention, got {type(attn).__name__}")
        self.attn, self.layer_id = attn, layer_id

    @classmethod
    def from_longformer(cls, hf_self_attention: nn.Module, *, impl: str = "hybrid",
                        backend: str = "auto") -> "LongformerSelfAttentionSwap":
        """Wrap ``HybridSparseAttention.from_longformer(hf_self_attention)``."""
        attn = HybridSparseAttention.from_longformer(hf_self_attention, impl=impl, backend=backend)
        return cls(attn, getattr(hf_self_attention, "layer_id", 0))

    def forward(self, hidden_states: Tensor, attention_mask: Optional[Tensor] = None,
                is_index_masked: Optional[Tensor] = None, is_index_global_attn: Optional[Tensor] = None,
                is_global_attn: Optional[bool] = None, output_attentions: bool = False, **kwargs):
        if output_attentions:
            raise ValueError("output_attentions=True is not supported by the swapped attention (Longformer's "
                             "banded probabilities have no counterpart); call the model without it")
        if is_index_masked is None and attention_mask is not None:
            is_index_masked = attention_mask < 0                           # LongformerModel: min = padding
        if is_index_global_attn is None and attention_mask is not None:
            is_index_global_attn = attention_mask > 0                      # max = global
        if is_global_attn is False:
            is_index_global_attn = None
        y = self.attn(hidden_states, global_mask=is_index_global_attn, key_padding_mask=is_index_masked)
        return (y,)                                                        # (B, T, dim), as Longformer returns


def swap_longformer_attention(model: nn.Module, *, impl: str = "hybrid", backend: str = "auto") -> nn.Module:
    """Replace every ``LongformerSelfAttention`` inside ``model`` by ours, keeping the weights; returns ``model``.

    Raises ImportError when transformers is missing (``pip install -e ".[peers]"``) and ValueError
    when ``model`` holds no Longformer self-attention.
    """
    try:
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention
    except ImportError as exc:                                             # the optional `peers` extra
        raise ImportError("swap_longformer_attention needs transformers: pip install -e \".[peers]\"") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, LongformerSelfAttention)]
    if not targets:
        raise ValueError(f"model ({type(model).__name__}) holds no LongformerSelfAttention to swap")
    for parent, name, child in targets:
        setattr(parent, name, LongformerSelfAttentionSwap.from_longformer(child, impl=impl, backend=backend))
    return model


def count_swapped(model: nn.Module) -> int:
    """How many self-attentions of ``model`` are ours."""
    return sum(isinstance(m, LongformerSelfAttentionSwap) for m in model.modules())
