"""tutor.conventions.decoders without the peer libraries: each decoder convention's documented rule
written out again here (the Mistral reference's triu/tril prefill mask and its rotating buffer,
gpt-oss's -inf band, attention-gym's predicate, flash-attn's inclusive window), equal to our causal
window for the converted setting, and the off-by-one between them pinned. transformers itself is
run in tests/conventions/test_decoder_windows_peers.py."""
from __future__ import annotations

import pytest
import torch

from tutor import conventions as cv
from tutor.decode import RingKVCache, sink_window_mask
from tutor.masks import hybrid_mask

T = 14


def documented(key, s):
    """(T, T) bool from each library's own words."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    ones = torch.ones(T, T)
    if key in ("hf_eager_sdpa", "hf_flash"):                             # kv_idx > q_idx - sw, causal
        return (j > i - s) & (j <= i) if key == "hf_eager_sdpa" else cv.flash_pairs(T, s - 1, s - 1, causal=True)
    if key == "flash_causal":
        return cv.flash_pairs(T, s, 0, causal=True)
    if key == "attention_gym":                                          # q_idx - kv_idx <= window_size & causal
        return (i - j <= s) & (i >= j)
    if key == "mistral_prefill":                                        # one_file_ref.py
        return torch.triu(torch.tril(ones, diagonal=0), diagonal=-s).bool()
    if key == "mistral_decode":                                         # a buffer of s slots, slot = p mod s
        reads = torch.zeros(T, T, dtype=torch.bool)
        slots = [-1] * s
        for p in range(T):
            slots[p % s] = p
            for held in slots:
                if held >= 0:
                    reads[p, held] = True
        return reads
    if key == "gpt_oss":                                                # gpt_oss/torch/model.py sdpa()
        mask = torch.triu(torch.full((T, T), -float("inf")), diagonal=1)
        mask = mask + torch.tril(torch.full((T, T), -float("inf")), diagonal=-s)
        return torch.isfinite(mask)
    raise AssertionError(key)


@pytest.mark.parametrize("key", [row.key for row in cv.DECODER_WINDOWS])
@pytest.mark.parametrize("s", [1, 2, 3, 5])
def test_each_documented_rule_is_our_causal_window(key, s):
    w = cv.decoder_w(key, s)
    pairs = cv.decoder_window_pairs(key, T, s)
    assert torch.equal(pairs, documented(key, s))
    assert torch.equal(pairs, hybrid_mask(T, w, causal=True)[0])
    assert torch.equal(pairs, sink_window_mask(T, w)[0])
    assert cv.to_decoder_setting(key, w) == s
    assert int(pairs[-1].sum()) == cv.decoder_keys_read(key, s) == w + 1


def test_the_same_number_reads_4096_or_4097_keys():
    table = {key: (keys, w) for key, _, keys, w in cv.same_number_table(4096)}
    assert table["hf_eager_sdpa"] == table["hf_flash"] == table["gpt_oss"] == table["mistral_decode"] == (4096, 4095)
    assert table["flash_causal"] == table["attention_gym"] == table["mistral_prefill"] == (4097, 4096)
    shown = dict((key, text) for key, text, _, _ in cv.same_number_table(4096))
    assert shown["hf_flash"].endswith("window_size=(4095, 4095)")


def test_mistral_reference_prefill_reads_one_key_more_than_its_decode():
    s = 4
    prefill, decode = documented("mistral_prefill", s), documented("mistral_decode", s)
    assert (prefill & ~decode).sum() == T - s                             # the key i - s, from row s on
    assert not (decode & ~prefill).any()


def test_our_ring_is_mistral_buffer_for_its_own_rule():
    for s in (1, 3, 6):
        w = cv.decoder_w("mistral_decode", s)
        ring = RingKVCache(w)
        assert ring.size == s                                           # w + 1 slots
        held = []
        for p in range(T):
            ring.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), p)
            held.append(sorted(q for q in ring.positions.tolist() if q >= 0))
        reads = documented("mistral_decode", s)
        assert held == [reads[p].nonzero().flatten().tolist() for p in range(T)]


def test_bad_keys_and_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="no decoder window"):
        cv.decoder_w("mistral", 4)
    with pytest.raises(ValueError, match="setting"):
        cv.decoder_w("hf_eager_sdpa", 0)                                 # sliding_window=0 reads nothing
    assert cv.decoder_w("flash_causal", 0) == 0                           # window_size=(0, 0): the query only
    with pytest.raises(ValueError, match="window"):
        cv.to_decoder_setting("gpt_oss", -1)
    assert all(row.docs.startswith("https://") for row in cv.DECODER_WINDOWS)
