"""Ask a library which keys each query reads, by running it on a probe.

The probe makes every allowed score equal (zero queries) and every value one-hot (the value of key
``j`` is ``e_j``), so output row ``i`` is uniform over the keys ``i`` reads and exactly 0 elsewhere:
``reads = out > 0``. Both functions import their library when called (the `peers` extra).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..conventions import longformer_layer_inputs

__all__ = ["longformer_reads", "local_attention_reads"]


def longformer_reads(T: int, attention_window: int, global_mask: Optional[Tensor] = None,
                     key_padding_mask: Optional[Tensor] = None) -> Tensor:
    """(B, T, T) bool: the keys each query of transformers' ``LongformerSelfAttention`` reads.

    ``T`` must be a multiple of ``attention_window`` (``LongformerModel`` pads to it); the masks are
    handed over the way ``LongformerModel`` hands them to its layers.
    """
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention
    B = next((m.shape[0] for m in (global_mask, key_padding_mask) if m is not None), 1)
    glob = global_mask if global_mask is not None else torch.zeros(B, T, dtype=torch.bool)
    pad = key_padding_mask if key_padding_mask is not None else torch.zeros(B, T, dtype=torch.bool)
    config = LongformerConfig(hidden_size=T, num_attention_heads=1, attention_window=[attention_window],
                              attention_probs_dropout_prob=0.0)
    attn = LongformerSelfAttention(config, layer_id=0).eval()
    with torch.no_grad():
        for lin in (attn.query, attn.query_global):                      # zero queries: equal scores
            lin.weight.zero_()
            lin.bias.zero_()
        for lin in (attn.value, attn.value_global):                      # identity values
            lin.weight.copy_(torch.eye(T))
            lin.bias.zero_()
        x = torch.eye(T).expand(B, T, T).contiguous()                     # hidden state of token j = e_j
        out = attn(x, **longformer_layer_inputs(glob, pad))[0]
    return out > 0                                                        # (B, T, T)


def local_attention_reads(T: int, mask: Optional[Tensor] = None, **settings) -> Tensor:
    """(T, T) bool: the keys each query of lucidrains' ``LocalAttention(**settings)`` reads."""
    from local_attention import LocalAttention
    layer = LocalAttention(**settings).eval()
    q = torch.zeros(1, T, T)                                              # (b, n, d): equal scores
    k = torch.randn(1, T, T, generator=torch.Generator().manual_seed(0))
    v = torch.eye(T)[None]                                                # (1, n, n): value of key j = e_j
    with torch.no_grad():
        out = layer(q, k, v, mask=mask)[0]                                # (T, T)
    return out > 0
