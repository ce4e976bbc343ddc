"""Our attention inside other libraries' models (transformers' Longformer, the optional `peers` extra).

* :mod:`.longformer` - :func:`swap_longformer_attention` puts :class:`~tutor.attention.HybridSparseAttention`
  (any ``impl`` / ``backend``) in place of every ``LongformerSelfAttention``, keeping the weights.
* :mod:`.probes` - which keys a library's attention reads, found by running it (``longformer_reads``,
  ``local_attention_reads``).
* :mod:`.bench_longformer` - ``python -m tutor.interop.bench_longformer``: speed and memory of the
  swapped layer against Longformer's own, side by side (floor 4: it uses the bench aids).

Importing this package does not import transformers; the swap does, when called.
"""
from .longformer import LongformerSelfAttentionSwap, count_swapped, swap_longformer_attention
from .probes import local_attention_reads, longformer_reads

__all__ = ["LongformerSelfAttentionSwap", "swap_longformer_attention", "count_swapped", "longformer_reads",
           "local_attention_reads"]
