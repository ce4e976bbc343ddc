"""The decoder window conventions against transformers itself (the `peers` extra): its eager and SDPA
sliding-window masks, the window_size its flash path hands flash-attn, and gpt-oss's banded and
dense layers, each equal to tutor.conventions.decoder_window_pairs for the same setting."""
from __future__ import annotations

import collections

import pytest
import torch

from tutor import conventions as cv
from tutor.masks import create_mask

transformers = pytest.importorskip("transformers")
from transformers import masking_utils as mu                               # noqa: E402

T = 12


@pytest.mark.parametrize("s", [1, 2, 5])
def test_transformers_eager_and_sdpa_masks(s):
    fn = mu.sliding_window_causal_mask_function(s)
    sdpa = mu.sdpa_mask(batch_size=1, q_length=T, kv_length=T, mask_function=fn, allow_is_causal_skip=False)
    eager = mu.eager_mask(batch_size=1, q_length=T, kv_length=T, mask_function=fn, dtype=torch.float32)
    want = cv.decoder_window_pairs("hf_eager_sdpa", T, s)
    assert torch.equal(sdpa[0, 0], want)
    assert torch.equal(eager[0, 0] == 0, want)
    assert torch.equal(create_mask(fn, 1, T)[0], want)


@pytest.mark.parametrize("s", [2, 5])
def test_transformers_flash_path_window_size(s):
    from transformers.modeling_flash_attention_utils import _process_flash_attention_kwargs
    kw = _process_flash_attention_kwargs(query_length=T, key_length=T, is_causal=True, sliding_window=s,
                                         supports_mapping=collections.defaultdict(bool, window_size=True))
    left, right = kw["window_size"]
    assert (left, right) == (s - 1, s - 1) and kw["causal"]
    flash = cv.flash_pairs(T, left, right, causal=True)
    assert torch.equal(flash, cv.decoder_window_pairs("hf_flash", T, s))
    assert torch.equal(flash, cv.decoder_window_pairs("hf_eager_sdpa", T, s))      # same keys in transformers 5
    # ... while flash-attn called directly with window_size=(s, 0) reads one key more
    assert int(cv.flash_pairs(T, s, 0, causal=True)[-1].sum()) == s + 1


def test_gpt_oss_alternates_banded_and_dense_layers():
    from transformers import GptOssConfig
    config = GptOssConfig(num_hidden_layers=4, sliding_window=3)
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2
    config._attn_implementation = "eager"
    x = torch.zeros(1, T, 8)
    band = mu.create_sliding_window_causal_mask(config=config, inputs_embeds=x, attention_mask=None, cache=None)
    full = mu.create_causal_mask(config=config, inputs_embeds=x, attention_mask=None, cache=None)
    assert torch.equal(band[0, 0] == 0, cv.decoder_window_pairs("gpt_oss", T, 3))
    assert torch.equal(full[0, 0] == 0, torch.ones(T, T).tril().bool())
