"""Attention over a cache: one decode step (or a prefill chunk), grouped K/V heads, sink logits.

Two different things are called "sinks" in today's decoders; this package names them apart:

* **sink tokens** (``sinks=``, StreamingLLM): the first positions of the sequence, whose keys and
  values are kept in the cache forever and read by every query like any other key
  (:class:`~tutor.decode.cache.RingKVCache`). They are real tokens with real values.
* **sink logits** (``sink_logits=``, gpt-oss's ``s_aux``): one learned number per head, an extra
  logit in the softmax *denominator* with no value: ``p_j = exp(s_j) / (exp(s_sink) + sum_k exp(s_k))``.
  The weights of a row then sum to less than 1, so a head can attend to "nothing" without having to
  dump its weight on a real token. No cache slot, no position.

Grouped K/V heads: ``H`` query heads share ``H_kv`` key/value heads, query head ``h`` reading
key/value head ``h // (H / H_kv)`` (the convention of transformers' ``repeat_kv``). The query heads
of a group are folded into the rows of one matmul, so the keys are never copied ``H / H_kv`` times.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..attention.softmax import accum_dtype, masked_softmax
from ..arguments import check_heads
from .inputs import check_sink_logits, check_softcap, scale_or_default
from .cache import CacheView

__all__ = ["masked_attention", "decode_attention"]


def masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, *,
                     sink_logits: Optional[Tensor] = None, scale: Optional[float] = None,
                     softcap: Optional[float] = None) -> Tensor:
    """Attention of ``q`` over ``k, v`` where ``allowed``, with grouped heads and optional sink logits.

    q: (B, H, Tq, Dh); k, v: (B, H_kv, N, Dh) with ``H % H_kv == 0``; allowed: (Tq, N) bool, the
    same for every sequence, or (B, Tq, N) (e.g. with padding); sink_logits: (H,) or None. Returns
    (B, H, Tq, Dh) in q's dtype. A row with nothing allowed (and no sink logit) outputs zeros; a key
    no query may read never reaches the output, even as NaN (its value is zeroed, as in
    :func:`tutor.attention.dense_attention`). Scores and softmax run in float32 (float64 stays
    float64). ``softcap``: Gemma 2's logit soft-capping, scaled scores ``s -> softcap * tanh(s / softcap)``
    before the mask (None: none).
    """
    check_heads("q", q)
    B, H, Tq, Dh = q.shape
    Hkv, N = k.shape[1], k.shape[2]
    if k.shape[0] != B or k.shape[3] != Dh or v.shape != k.shape or H % max(Hkv, 1) or Hkv == 0:
        raise ValueError(f"k and v must be (B, H_kv, N, Dh) with q's B and Dh and H_kv dividing H: "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not isinstance(allowed, Tensor) or tuple(allowed.shape) not in ((Tq, N), (B, Tq, N)) \
            or allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a bool (Tq, N) = ({Tq}, {N}) or (B, Tq, N) tensor, "
                         f"got {getattr(allowed, 'dtype', type(allowed).__name__)} "
                         f"{tuple(getattr(allowed, 'shape', ()))}")
    sink_logits = check_sink_logits(sink_logits, H)
    scale = scale_or_default(scale, Dh)
    softcap = check_softcap(softcap)
    group = H // Hkv
    per_seq = allowed.dim() == 3
    ok = allowed[:, None] if per_seq else allowed                         # (B, 1, Tq, N) or (Tq, N)
    unread = ~allowed.any(dim=-2)                                         # (B, N) or (N,)
    unread = unread[:, None, :, None] if per_seq else unread[None, None, :, None]
    acc = accum_dtype(q.dtype)
    qg = q.to(acc).reshape(B, Hkv, group * Tq, Dh)                         # (B, H_kv, g*Tq, Dh)
    scores = (qg @ k.to(acc).transpose(-1, -2)) * scale                   # (B, H_kv, g*Tq, N)
    scores = scores.reshape(B, H, Tq, N)                                  # (B, H, Tq, N)
    if softcap is not None:                                               # Gemma 2
        scores = torch.tanh(scores / softcap) * softcap
    if sink_logits is None:
        p = masked_softmax(scores, ok)                                    # (B, H, Tq, N)
    else:                                                                 # one more column, no value
        sink = sink_logits.to(acc).reshape(1, H, 1, 1).expand(B, H, Tq, 1)  # (B, H, Tq, 1)
        ok = torch.cat([ok, ok.new_ones(ok.shape[:-1] + (1,))], dim=-1)   # (..., Tq, N + 1)
        p = masked_softmax(torch.cat([scores, sink], dim=-1), ok)[..., :N]  # (B, H, Tq, N)
    vf = v.to(acc).masked_fill(unread, 0.0)                               # (B, H_kv, N, Dh)
    out = p.reshape(B, Hkv, group * Tq, N) @ vf                           # (B, H_kv, g*Tq, Dh)
    return out.reshape(B, H, Tq, Dh).to(q.dtype)                          # (B, H, Tq, Dh)


def decode_attention(q: Tensor, view: CacheView, *, positions: Optional[Tensor] = None,
                     sink_logits: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """One decode step over a cache: the newest query reads what the cache holds for it.

    q: (B, H, 1, Dh), rotated at its absolute position; ``view``: the cache's
    :meth:`~tutor.decode.cache.RingKVCache.view` *after* the newest key was stored (B, H_kv,
    sinks + w + 1, Dh): memory O(w + sinks), whatever the position. ``positions=None`` means the
    query is the newest position the view holds. For a prefill chunk pass q (B, H, C, Dh), its (C,)
    ``positions`` and the view extended by the chunk (:meth:`CacheView.extended`); the rule
    (:func:`tutor.decode.rule.allowed_by_position`) then masks each query's keys by position.
    ``sink_logits``: (H,) learned sink logits (gpt-oss), or None. Returns (B, H, Tq, Dh).
    """
    check_heads("q", q)
    if not isinstance(view, CacheView):
        raise TypeError(f"view must be a CacheView (cache.view()), got {type(view).__name__}")
    if positions is None:
        if q.shape[2] != 1:
            raise ValueError(f"q must have one position (B, H, 1, Dh) for a decode step without "
                             f"positions, got {tuple(q.shape)}; pass positions for a chunk")
        if view.newest < 0:
            raise ValueError("view is empty: update the cache with the newest key before attending")
        positions = torch.tensor([view.newest])
    elif not isinstance(positions, Tensor) or positions.dim() != 1 or positions.numel() != q.shape[2]:
        raise ValueError(f"positions must be a (Tq,) = ({q.shape[2]},) integer tensor, got "
                         f"{getattr(positions, 'shape', type(positions).__name__)}")
    return masked_attention(q, view.keys, view.values, view.allowed(positions),
                            sink_logits=sink_logits, scale=scale)           # (B, H, Tq, Dh)
