"""Sliding windows in decoders that generate: a ring KV cache with sink tokens, and its oracles.

* :class:`RingKVCache` (:mod:`.cache`): fixed memory, the ``sinks`` first positions kept forever
  plus a ring of the ``window + 1`` keys the newest query may read (slot = position mod
  ``window + 1``), keys stored with their absolute positions; :class:`GrowingKVCache` for full
  layers; :class:`CacheView`, what a query reads; :func:`ring_slot`.
* :func:`decode_attention` (:mod:`.attend`): one decode step over a cache (or a prefill chunk),
  grouped K/V heads, learned sink *logits* (gpt-oss) - not to be confused with sink *tokens*;
  :func:`masked_attention`, the same over any keys and mask.
* :mod:`.rule`: which key a query reads (``j <= i and (i - j <= w or j < sinks)``), as positions
  (:func:`allowed_by_position`), a mask mod and a mask, and why a sink token is the course's
  global token seen from a causal decoder (:func:`sinks_as_global_mask`).
* :class:`TinyDecoder` (:mod:`.model`): RoPE, grouped K/V heads, a layer pattern such as Gemma's
  5 local : 1 global (:func:`layer_pattern`), prefill and greedy generation through the caches;
  ``positions="in_cache"`` is StreamingLLM's re-indexed positions, beside the absolute ones.
"""
from .attend import decode_attention, masked_attention
from .cache import CacheView, GrowingKVCache, RingKVCache, ring_slot
from .model import POSITION_MODES, DecoderConfig, TinyDecoder, layer_pattern
from .rope import apply_rope
from .rule import allowed_by_position, sink_window_mask, sink_window_mask_mod, sinks_as_global_mask

__all__ = ["RingKVCache", "GrowingKVCache", "CacheView", "ring_slot", "decode_attention",
           "masked_attention", "allowed_by_position", "sink_window_mask", "sink_window_mask_mod",
           "sinks_as_global_mask", "apply_rope", "DecoderConfig", "TinyDecoder", "layer_pattern",
           "POSITION_MODES"]
