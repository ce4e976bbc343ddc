"""Our attention inside other libraries' models (transformers' Longformer, the optional `peers` extra).

* :mod:`.longformer` - :func:`swap_longformer_attention` puts :class:`~tutor.attention.HybridSparseAttention`
  (any ``impl`` / ``backend``) in place of every ``LongformerSelfAttention``, keeping the weights.
* :mod:`.probes` - which keys a library's attention reads, found by running it (``longformer_reads``,
  ``local_attention_reads``).
* :mod:`.hf_attention` - :func:`register_hf_attention` registers our attention (and a mask function,
  so padding reaches it) with transformers as ``attn_implementation="tutor"``: any decoder
  (Mistral, Gemma 3, gpt-oss: sliding and full layers, grouped K/V heads, sink logits) runs on it.
* :mod:`.bench_longformer` - ``python -m tutor.interop.bench_longformer``: speed and memory of the
  swapped layer against Longformer's own, side by side (floor 4: it uses the bench aids).

Importing this package does not import transformers; the swap does, when called.
"""
from .hf_attention import (HF_ATTENTION_NAME, QUERY_CHUNK, HFMaskSpec, hf_attention_forward, hf_attention_mask,
                           register_hf_attention)
from .longformer import LongformerSelfAttentionSwap, count_swapped, swap_longformer_attention
from .probes import local_attention_reads, longformer_reads

__all__ = ["LongformerSelfAttentionSwap", "swap_longformer_attention", "count_swapped", "longformer_reads",
           "local_attention_reads", "HF_ATTENTION_NAME", "QUERY_CHUNK", "HFMaskSpec", "hf_attention_forward",
           "hf_attention_mask", "register_hf_attention"]
