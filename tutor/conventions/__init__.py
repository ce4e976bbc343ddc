"""Other libraries' words for the window and the global tokens, and converters to and from ours.

* :mod:`.table` - :data:`CONVENTIONS`, one row per library setting (what its number counts, the
  formulas both ways, how it names global tokens, whether the pairs are the same, its docs).
* :mod:`.windows` - ``to_<library>(window)`` / ``from_<library>(setting)``; ValueError where a
  convention cannot say what ours says.
* :mod:`.mask_formats` - our masks as SDPA / FlexAttention / Longformer masks (the model's and its
  layers'), and Longformer's
  choice of global tokens for classification and question answering.
* :mod:`.decoders` - causal decoders' windows (transformers eager/SDPA vs flash, flash-attn
  ``window_size=(left, 0)``, attention-gym, Mistral's reference prefill and rotating buffer,
  gpt-oss's banded layers): :data:`DECODER_WINDOWS`, :func:`decoder_w`, :func:`same_number_table`.
* :mod:`.pairs` - the (query, key) pairs a library setting allows, from its documented rule.

Nothing here imports the libraries themselves: the tests run them (transformers, local-attention)
against these functions.
"""
from .decoders import (DECODER_WINDOWS, DecoderWindow, decoder_keys_read, decoder_w, decoder_window,
                       decoder_window_pairs, same_number_table, to_decoder_setting)
from .mask_formats import (cls_global_attention_mask, from_longformer_masks, longformer_layer_inputs,
                           qa_global_attention_mask, to_flex_mask_mod, to_longformer_masks, to_sdpa_mask)
from .pairs import (bigbird_band_pairs, flash_pairs, local_attention_pairs, longformer_pairs, natten_pairs,
                    sliding_window_pairs)
from .table import CONVENTIONS, Convention, convention, table_rows
from .windows import (bigbird_window_bounds, from_flash_window_size, from_local_attention, from_longformer,
                      from_natten, from_sliding_window, to_bigbird, to_flash_window_size, to_local_attention,
                      to_longformer, to_natten, to_sliding_window)

__all__ = ["CONVENTIONS", "Convention", "convention", "table_rows",
           "to_longformer", "from_longformer", "to_flash_window_size", "from_flash_window_size",
           "to_local_attention", "from_local_attention", "to_natten", "from_natten", "to_sliding_window",
           "from_sliding_window", "to_bigbird", "bigbird_window_bounds",
           "to_sdpa_mask", "to_flex_mask_mod", "to_longformer_masks", "from_longformer_masks", "longformer_layer_inputs",
           "qa_global_attention_mask", "cls_global_attention_mask",
           "flash_pairs", "longformer_pairs", "local_attention_pairs", "natten_pairs", "sliding_window_pairs",
           "bigbird_band_pairs", "DECODER_WINDOWS", "DecoderWindow", "decoder_window", "decoder_w",
           "to_decoder_setting", "decoder_keys_read", "decoder_window_pairs", "same_number_table"]
