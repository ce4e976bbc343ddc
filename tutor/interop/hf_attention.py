"""Our attention inside any Hugging Face decoder: ``attn_implementation="tutor"``.

:func:`register_hf_attention` registers two functions with transformers under the name
:data:`HF_ATTENTION_NAME` (``"tutor"``):

* an **attention function** (``AttentionInterface``): :func:`hf_attention_forward`, which runs
  :func:`tutor.decode.masked_attention` (grouped K/V heads read in place, gpt-oss's sink logits
  ``s_aux`` as an extra softmax column with no value) over the keys the model hands it;
* a **mask function** (``AttentionMaskInterface``): :func:`hf_attention_mask`. transformers builds
  no mask at all for an attention name without one (``attention_mask=None`` reaches the attention,
  so the padding of a batch would be silently dropped). Ours builds no (B, 1, T, N) tensor either:
  it returns :class:`HFMaskSpec`, the model's own mask *predicate* (causal, or causal with the
  layer's sliding window, ANDed with the 2-D padding mask, as ``sdpa_mask`` does) with the
  query/key offsets the cache reported.

The attention evaluates that predicate one chunk of queries at a time (:data:`QUERY_CHUNK` rows
against the keys: a (B, chunk, N) bool table, linear in N), keeps only the columns the chunk may
read (for a sliding layer the band of ``chunk + sliding_window - 1`` keys) and computes scores
there: a prefill of ``T`` tokens never holds a ``T x T`` score matrix when a window applies
(``chunk x (chunk + w)`` scores per step), and one decoded token reads the ``w`` keys a sliding
cache layer holds (``DynamicCache`` keeps ``sliding_window - 1`` of them per sliding layer). Because
the rule is the model's own predicate, the window convention (HF's ``sliding_window`` counts the
query: ``q - sliding_window < k <= q``) is the model's, not a re-derived one, and so are packed
sequences, Gemma 3's bidirectional overlay and the empty slots of a static cache.

Gemma 2's logit soft-capping (``softcap``) is applied to the scaled scores as its eager path does.
What cannot be honoured is refused with a ``ValueError`` naming it: dropout while training,
``output_attentions=True``, a prepared 4-D mask, a predicate that cannot be evaluated on index
tensors, a mask sized for other query/key counts than the attention got. A model loads with::

    from tutor.interop import register_hf_attention
    name = register_hf_attention()                        # "tutor"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=name)

Importing this module does not import transformers; :func:`register_hf_attention` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from ..decode import masked_attention

__all__ = ["HF_ATTENTION_NAME", "QUERY_CHUNK", "HFMaskSpec", "hf_attention_mask", "hf_attention_forward",
           "register_hf_attention"]

HF_ATTENTION_NAME = "tutor"
QUERY_CHUNK = 128


@dataclass(frozen=True)
class HFMaskSpec:
    """What :func:`hf_attention_mask` hands the attention instead of a (B, 1, T, N) mask.

    ``mask_function(b, h, q_idx, kv_idx)``: transformers' predicate (True = may attend), padding
    included; ``q_offset`` / ``kv_offset``: the absolute index of the first query / key, as the
    cache reported them; ``q_length`` / ``kv_length``: the sizes the attention will get.
    """
    mask_function: Callable
    batch_size: int
    q_length: int
    kv_length: int
    q_offset: int
    kv_offset: int

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(B, 1, T, N): the mask this stands for (transformers reads ``ndim`` of a prepared mask)."""
        return (self.batch_size, 1, self.q_length, self.kv_length)

    @property
    def ndim(self) -> int:
        return 4

    def allowed(self, rows: slice, device) -> Tensor:
        """(B, C, N) bool: which keys the queries ``rows`` may read (C = rows' length, N = kv_length)."""
        b = torch.arange(self.batch_size, device=device)[:, None, None, None]          # (B, 1, 1, 1)
        h = torch.zeros(1, dtype=torch.long, device=device)[None, :, None, None]       # (1, 1, 1, 1)
        q = (torch.arange(rows.start, rows.stop, device=device) + self.q_offset)[None, None, :, None]
        kv = (torch.arange(self.kv_length, device=device) + self.kv_offset)[None, None, None, :]
        try:
            ok = self.mask_function(b, h, q, kv)                                        # broadcast (B?, 1, C, N)
        except Exception as exc:                                                        # a vmap-only predicate
            raise ValueError(f"attention_mask: the model's mask predicate cannot be evaluated on index "
                             f"tensors ({type(exc).__name__}: {exc}); attn_implementation='tutor' needs an "
                             f"index-based mask function (causal, sliding window, padding, packing)") from exc
        ok = torch.as_tensor(ok, device=device).to(torch.bool)
        return ok.expand(self.batch_size, 1, rows.stop - rows.start, self.kv_length)[:, 0]  # (B, C, N)


def hf_attention_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                      mask_function: Optional[Callable] = None, attention_mask: Optional[Tensor] = None,
                      **kwargs) -> HFMaskSpec:
    """transformers' mask interface for ``"tutor"``: the predicate and offsets, no (B, 1, T, N) tensor.

    ``attention_mask``: the 2-D (B, seen + T) padding mask (True / 1 = a real token) or None; it is
    ANDed into the predicate exactly as transformers' ``sdpa_mask`` does.
    """
    if isinstance(attention_mask, HFMaskSpec):                                         # prepared by generate()
        return attention_mask
    from transformers.masking_utils import (and_masks, causal_mask_function, padding_mask_function,
                                            prepare_padding_mask)
    fn = causal_mask_function if mask_function is None else mask_function
    if attention_mask is not None and not bool(attention_mask.all()):
        padding = prepare_padding_mask(attention_mask.to(torch.bool), kv_length, int(kv_offset))
        fn = and_masks(fn, padding_mask_function(padding))
    return HFMaskSpec(fn, int(batch_size), int(q_length), int(kv_length), int(q_offset), int(kv_offset))


def _refuse(what: str, why: str) -> None:
    raise ValueError(f"attn_implementation='{HF_ATTENTION_NAME}' cannot honour {what}: {why}")


def hf_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Optional[HFMaskSpec], scaling: Optional[float] = None,
                         dropout: float = 0.0, sliding_window: Optional[int] = None,
                         s_aux: Optional[Tensor] = None, softcap: Optional[float] = None,
                         **kwargs) -> Tuple[Tensor, None]:
    """transformers' attention interface for ``"tutor"``: (B, T, H, Dh) output, no weights.

    query: (B, H, T, Dh); key, value: (B, H_kv, N, Dh) as the cache returned them (H_kv dividing H,
    read in place); ``attention_mask``: the :class:`HFMaskSpec` of :func:`hf_attention_mask` (None:
    plain causal over the last T of the N keys); ``s_aux``: gpt-oss's (H,) sink logits;
    ``softcap``: Gemma 2's logit soft-capping. ``sliding_window`` is not read: the layer's window
    is already in the mask predicate the model built for it.
    """
    if dropout and module.training:
        _refuse(f"dropout={dropout} in training mode", "call model.eval() or set attention_dropout=0")
    if kwargs.get("output_attentions"):
        _refuse("output_attentions=True", "the weights are never materialised (chunked over queries)")
    B, H, T, Dh = query.shape                                                          # (B, H, T, Dh)
    N = key.shape[2]
    if attention_mask is None:                                                         # causal, keys end at the queries
        from transformers.masking_utils import causal_mask_function
        attention_mask = HFMaskSpec(causal_mask_function, B, T, N, N - T, 0)
    elif not isinstance(attention_mask, HFMaskSpec):
        _refuse(f"an attention_mask of type {type(attention_mask).__name__} "
                f"{tuple(getattr(attention_mask, 'shape', ()))}",
                "pass the 2-D padding mask and let the model build the mask (a prepared 4-D mask is not read)")
    if (attention_mask.q_length, attention_mask.kv_length) != (T, N):
        _refuse(f"a mask for (T, N) = ({attention_mask.q_length}, {attention_mask.kv_length})",
                f"the attention got {T} queries and {N} keys")
    out = query.new_empty(B, H, T, Dh)                                                 # (B, H, T, Dh)
    for start in range(0, T, QUERY_CHUNK):
        rows = slice(start, min(start + QUERY_CHUNK, T))
        allowed = attention_mask.allowed(rows, query.device)                           # (B, C, N)
        cols = allowed.any(dim=(0, 1)).nonzero()                                       # (n, 1) readable keys
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 1)          # the band
        out[:, :, rows] = masked_attention(query[:, :, rows], key[:, :, lo:hi], value[:, :, lo:hi],
                                           allowed[:, :, lo:hi], sink_logits=s_aux,
                                           scale=scaling, softcap=softcap)              # (B, H, C, Dh)
    return out.transpose(1, 2).contiguous(), None                                      # (B, T, H, Dh)


def register_hf_attention() -> str:
    """Register our attention and mask functions with transformers; returns the name, ``"tutor"``.

    Idempotent. Raises ImportError when transformers is missing (``pip install -e ".[peers]"``).
    """
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as exc:                                                          # the optional `peers` extra
        raise ImportError("register_hf_attention needs transformers >= 5: pip install -e \".[peers]\"") from exc
    AttentionInterface.register(HF_ATTENTION_NAME, hf_attention_forward)
    AttentionMaskInterface.register(HF_ATTENTION_NAME, hf_attention_mask)
    return HF_ATTENTION_NAME
