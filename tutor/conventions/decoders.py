"""Window conventions of causal decoders, and the off-by-one between them made visible.

Ours: a causal layer with window ``w`` lets query ``i`` read key ``j`` when ``0 <= i - j <= w``:
``w + 1`` keys, the query itself included (:func:`tutor.decode.rule.allowed_by_position`; a
:class:`~tutor.decode.RingKVCache` holds exactly those ``w + 1`` keys). Every library below names
one number; what it counts differs by one from one library to the next, so the same number
``4096`` reads 4096 keys in one and 4097 in another (:func:`same_number_table`):

==================  =====================================================  =================
key                 rule for the setting ``s``                             our ``w``
==================  =====================================================  =================
hf_eager_sdpa       transformers eager / SDPA mask: ``i - s < j <= i``     ``s - 1``
hf_flash            transformers' flash path: ``window_size=(s-1, s-1)``,  ``s - 1``
                    causal (same keys as eager in transformers 5)
flash_causal        flash-attn ``window_size=(s, 0)``, causal:             ``s``
                    ``i - s <= j <= i`` (both ends inclusive)
attention_gym       attention-gym ``generate_sliding_window(s)``:          ``s``
                    ``q - kv <= s`` and causal
mistral_prefill     Mistral's reference prefill mask                       ``s``
                    ``triu(tril(1), diagonal=-s)``: ``i - j <= s``
mistral_decode      Mistral's reference rotating buffer: ``s`` slots,      ``s - 1``
                    position ``p`` in slot ``p mod s``
gpt_oss             gpt-oss (reference and transformers), banded layers:   ``s - 1``
                    ``-inf`` on ``tril(diagonal=-s)``: ``i - j < s``
==================  =====================================================  =================

Mistral's reference is the instructive one: its prefill reads ``s + 1`` keys, its rotating
buffer of ``s`` slots ``s`` keys, so the last prompt token sees one key more when prefilled than it
would when decoded. A ring sized ``w + 1`` for the rule ``i - j <= w`` has no such seam.

Nothing here imports the libraries; tests/conventions runs transformers against these rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor

from ..arguments import check_int
from .table import row_with_key

__all__ = ["DecoderWindow", "DECODER_WINDOWS", "decoder_window", "decoder_w", "to_decoder_setting",
           "decoder_keys_read", "decoder_window_pairs", "same_number_table"]


@dataclass(frozen=True)
class DecoderWindow:
    """One decoder convention: ``w = setting + offset`` (``offset`` is 0 or -1)."""
    key: str
    library: str
    rule: str
    offset: int
    docs: str


DECODER_WINDOWS: Tuple[DecoderWindow, ...] = (
    DecoderWindow("hf_eager_sdpa", "transformers eager / SDPA: config.sliding_window",
                  "i - sliding_window < j <= i (the query counts)", -1,
                  "https://github.com/huggingface/transformers/blob/main/src/transformers/masking_utils.py"),
    DecoderWindow("hf_flash", "transformers flash_attention_2 path: config.sliding_window",
                  "window_size=(sliding_window - 1, sliding_window - 1) with causal=True", -1,
                  "https://github.com/huggingface/transformers/blob/main/src/transformers/"
                  "modeling_flash_attention_utils.py"),
    DecoderWindow("flash_causal", "flash-attn: window_size=(left, 0), causal=True",
                  "i - left <= j <= i, both ends inclusive", 0,
                  "https://github.com/Dao-AILab/flash-attention/blob/main/flash_attn/flash_attn_interface.py"),
    DecoderWindow("attention_gym", "attention-gym: generate_sliding_window(window_size)",
                  "q_idx - kv_idx <= window_size and causal", 0,
                  "https://github.com/pytorch-labs/attention-gym/blob/main/attn_gym/masks/sliding_window.py"),
    DecoderWindow("mistral_prefill", "Mistral reference (one_file_ref.py), prefill mask: sliding_window",
                  "torch.triu(torch.tril(ones), diagonal=-sliding_window): i - j <= sliding_window", 0,
                  "https://github.com/mistralai/mistral-src"),
    DecoderWindow("mistral_decode", "Mistral reference, rotating cache of sliding_window slots",
                  "slot = position mod sliding_window; the newest key overwrites i - sliding_window", -1,
                  "https://github.com/mistralai/mistral-src"),
    DecoderWindow("gpt_oss", "gpt-oss banded layers (every other layer): sliding_window",
                  "-inf on torch.tril(diagonal=-sliding_window): i - j < sliding_window", -1,
                  "https://github.com/openai/gpt-oss/blob/main/gpt_oss/torch/model.py"),
)


def decoder_window(key: str) -> DecoderWindow:
    """The row with ``key`` (e.g. ``"hf_flash"``)."""
    return row_with_key(DECODER_WINDOWS, key, "decoder window")


def decoder_w(key: str, setting: int) -> int:
    """Our causal ``w`` for a library's setting (``i - j <= w``, ``w + 1`` keys)."""
    row = decoder_window(key)
    s = check_int("setting", setting, 1 if row.offset else 0)
    return s + row.offset


def to_decoder_setting(key: str, window: int) -> int:
    """The library's setting that reads exactly our causal window ``w``."""
    return check_int("window", window, 0) - decoder_window(key).offset


def decoder_keys_read(key: str, setting: int) -> int:
    """How many keys (the query included) a query far from the start reads under ``setting``."""
    return decoder_w(key, setting) + 1


def decoder_window_pairs(key: str, T: int, setting: int) -> Tensor:
    """(T, T) bool: the pairs the library's documented rule allows (True = query i reads key j)."""
    w = decoder_w(key, setting)
    T = check_int("T", T, 1)
    i = torch.arange(T)[:, None]                                          # (T, 1) queries
    j = torch.arange(T)[None, :]                                          # (1, T) keys
    return (j <= i) & (i - j <= w)                                       # (T, T)


def same_number_table(number: int) -> List[Tuple[str, str, int, int]]:
    """One row per convention: (key, setting as written, keys read, our w) for the same ``number``.

    ``same_number_table(4096)`` shows the 4096-versus-4097 keys of the issue trackers.
    """
    rows = []
    for row in DECODER_WINDOWS:
        shown = {"hf_flash": f"sliding_window={number} -> window_size=({number - 1}, {number - 1})",
                 "flash_causal": f"window_size=({number}, 0)",
                 "attention_gym": f"generate_sliding_window({number})"}.get(row.key, f"sliding_window={number}")
        rows.append((row.key, shown, decoder_keys_read(row.key, number), decoder_w(row.key, number)))
    return rows
