"""The converters against the real libraries (the `peers` extra): lucidrains' local-attention,
transformers' Longformer self-attention and its mask functions. Each library is run on a probe that
reveals which keys a query reads: equal scores (zero queries) and one-hot values (the value of key
j is e_j), so output row i is uniform over the keys i may read, and exactly 0 elsewhere."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tutor import conventions as cv
from tutor.interop import local_attention_reads, longformer_reads
from tutor.masks import create_mask, hybrid_mask

SMALL = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------- local-attention
local_attention = pytest.importorskip("local_attention")


def local_attention_output(T, mask=None, **settings_):
    """(T, T): output rows of ``LocalAttention(**settings_)`` on the probe (row sums show where mass went)."""
    layer = local_attention.LocalAttention(**settings_).eval()
    with torch.no_grad():
        return layer(torch.zeros(1, T, T), torch.zeros(1, T, T), torch.eye(T)[None], mask=mask)[0]


@SMALL
@given(w=st.integers(0, 6), n=st.integers(1, 5), causal=st.booleans())
def test_local_attention_converted_setting_selects_our_pairs(w, n, causal):
    settings_ = cv.to_local_attention(w, causal=causal)
    T = settings_["window_size"] * n
    assert torch.equal(local_attention_reads(T, **settings_), hybrid_mask(T, w, causal=causal)[0])


@SMALL
@given(ws=st.integers(1, 4), n=st.integers(1, 5), back=st.integers(0, 2), fwd=st.integers(0, 2),
       exact=st.booleans(), causal=st.booleans())
def test_local_attention_pairs_formula_is_the_library(ws, n, back, fwd, exact, causal):
    T = ws * n
    fwd = 0 if causal else fwd
    reads = local_attention_reads(T, window_size=ws, look_backward=back, look_forward=fwd,
                                  exact_windowsize=exact, causal=causal)
    assert torch.equal(reads, cv.local_attention_pairs(T, ws, back, fwd, exact, causal))


def test_local_attention_autopad_needs_a_mask():
    """T not a multiple of window_size: autopad adds zero keys that are read unless a mask says not."""
    w, T = 3, 10
    settings_ = {**cv.to_local_attention(w), "autopad": True}
    mask = torch.ones(1, T, dtype=torch.bool)
    assert torch.equal(local_attention_reads(T, mask=mask, **settings_), hybrid_mask(T, w)[0])
    torch.testing.assert_close(local_attention_output(T, mask=mask, **settings_).sum(-1), torch.ones(T))
    unmasked = local_attention_output(T, **settings_)
    assert unmasked.sum(-1)[-1] < 0.99                                   # probability went to padding keys


def test_bucketed_window_is_not_a_sliding_window():
    reads = local_attention_reads(12, window_size=4, look_backward=1, look_forward=1)
    reach = [int(reads[i].nonzero().max()) - i for i in range(12)]
    assert len(set(reach[:8])) > 1                                        # right reach depends on the bucket slot


# --------------------------------------------------------------------------- transformers
@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def test_longformer_attention_window_2_fails_inside_transformers(transformers):
    """A transformers bug, not ours: window_overlap = 1 breaks its chunked diagonal copy."""
    T = 4
    with pytest.raises(RuntimeError):
        longformer_reads(T, 2, torch.zeros(1, T, dtype=torch.bool), torch.zeros(1, T, dtype=torch.bool))


@SMALL
@given(w=st.integers(2, 4), n=st.integers(1, 3), data=st.data())
def test_longformer_converted_setting_selects_our_pairs(w, n, data):
    pytest.importorskip("transformers")
    aw = cv.to_longformer(w)
    T = aw * n                                                            # LongformerModel pads T to this
    flags = st.lists(st.booleans(), min_size=T, max_size=T)
    g = torch.tensor([data.draw(flags) for _ in range(2)])
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[1, T - data.draw(st.integers(0, T - 1)):] = True                  # tail padding of sequence 1
    assert torch.equal(longformer_reads(T, aw, g, pad), hybrid_mask(T, cv.from_longformer(aw), g, pad))


def test_longformer_masks_as_the_model_merges_them(transformers):
    """to_longformer_masks -> LongformerModel's own merge -> the same padding and global flags back."""
    from transformers import LongformerModel
    g = torch.tensor([[True, False, True, False], [False, False, True, True]])
    pad = torch.tensor([[False, False, False, True], [False, False, False, True]])
    attention_mask, global_attention_mask = cv.to_longformer_masks(g, pad)
    merged = LongformerModel._merge_to_attention_mask(None, attention_mask, global_attention_mask)
    assert torch.equal(merged == 0, pad) and torch.equal(merged == 2, g & ~pad)


def test_qa_global_tokens_as_transformers_chooses_them(transformers):
    from transformers.models.longformer.modeling_longformer import _compute_global_attention_mask
    sep = 2
    ids = torch.tensor([[0, 11, 12, sep, sep, 20, 21, sep], [0, 13, sep, sep, 22, 23, 24, sep]])
    ours = cv.qa_global_attention_mask(ids, sep)
    assert torch.equal(ours.bool(), _compute_global_attention_mask(ids, sep))


@pytest.mark.parametrize("sw", [1, 2, 5])
def test_transformers_sliding_window_masks(sw, transformers):
    from transformers import masking_utils as mu
    T = 12
    causal = create_mask(mu.sliding_window_causal_mask_function(sw), 1, T)[0]
    assert torch.equal(causal, cv.sliding_window_pairs(T, sw))
    assert torch.equal(causal, hybrid_mask(T, cv.from_sliding_window(sw), causal=True)[0])
    # transformers' *bidirectional* sliding window counts differently: |i - j| <= sliding_window
    both = create_mask(mu.sliding_window_bidirectional_mask_function(sw), 1, T)[0]
    assert torch.equal(both, hybrid_mask(T, sw)[0])
    # ... while its flash-attn path passes window_size=(sw - 1, sw - 1): one key fewer on each side
    assert not torch.equal(cv.flash_pairs(T, sw - 1, sw - 1), both)
