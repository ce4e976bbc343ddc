"""tutor.conventions without the peer libraries: converters both ways, their errors, the documented
formulas pinned (written out again here as loops over the libraries' own words), and PyTorch's
own SDPA and FlexAttention run on the converted masks. transformers and local-attention are run in
tests/conventions/test_conventions_peers.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from tutor import conventions as cv
from tutor.masks import hybrid_mask

SMALL = settings(max_examples=40, deadline=None)


def ours(T, w, causal=False):
    return hybrid_mask(T, w, causal=causal)[0]                            # (T, T)


# --------------------------------------------------------------------------- the table
def test_table_rows_have_docs_and_known_converters():
    keys = [row.key for row in cv.CONVENTIONS]
    assert len(keys) == len(set(keys))
    for expected in ("flex", "flash", "sdpa", "longformer", "bigbird", "local_attention", "natten", "sliding_window"):
        assert expected in keys
    for row in cv.CONVENTIONS:
        assert row.docs.startswith("https://") or row.key == "ours", row
        for dotted in row.converters:
            module, _, name = dotted.rpartition(".")
            assert callable(getattr(__import__(module, fromlist=[name]), name)), dotted
    assert cv.convention("natten").key == "natten"
    with pytest.raises(ValueError, match="no convention"):
        cv.convention("nope")
    assert len(cv.table_rows()[0]) == 4


# --------------------------------------------------------------------------- converters, both ways
@SMALL
@given(w=st.integers(1, 300))
def test_round_trips(w):
    assert cv.from_longformer(cv.to_longformer(w)) == w
    assert cv.from_flash_window_size(*cv.to_flash_window_size(w)) == w
    assert cv.from_flash_window_size(*cv.to_flash_window_size(w, causal=True), causal=True) == w
    assert cv.from_natten(cv.to_natten(w)) == w
    assert cv.from_sliding_window(cv.to_sliding_window(w)) == w
    s = cv.to_local_attention(w)
    assert cv.from_local_attention(s["window_size"], s["look_backward"], s["look_forward"], s["exact_windowsize"]) == w


def test_the_numbers():
    assert cv.to_longformer(256) == 512 and cv.from_longformer(512) == 256
    assert cv.to_flash_window_size(4) == (4, 4) and cv.to_flash_window_size(4, causal=True) == (4, 0)
    assert cv.to_natten(3) == 7 and cv.to_sliding_window(4095) == 4096 and cv.from_sliding_window(4096) == 4095
    assert cv.to_local_attention(0) == {"window_size": 1, "look_backward": 0, "look_forward": 0,
                                        "exact_windowsize": True, "causal": False}
    assert cv.from_local_attention(8, 2, 0, exact_windowsize=True, causal=True) == 16
    assert cv.bigbird_window_bounds(64) == (64, 127)
    assert cv.to_bigbird(5, cover=True) == {"block_size": 5, "num_random_blocks": 0}
    assert cv.to_sliding_window(0) == 1 and cv.from_flash_window_size(0, 0) == 0


@pytest.mark.parametrize("call, words", [
    (lambda: cv.from_longformer(7), "attention_window must be even"),
    (lambda: cv.from_longformer(0), "attention_window"),
    (lambda: cv.to_longformer(0), "window=0"),
    (lambda: cv.to_longformer(-1), "window"),
    (lambda: cv.from_flash_window_size(3, 2), "asymmetric"),
    (lambda: cv.from_flash_window_size(-1, -1), "no limit"),
    (lambda: cv.from_flash_window_size(2, -2), "right"),
    (lambda: cv.from_local_attention(4, 1, 1, exact_windowsize=False), "exact_windowsize"),
    (lambda: cv.from_local_attention(4, 2, 1, exact_windowsize=True), "asymmetric"),
    (lambda: cv.from_natten(6), "kernel_size must be odd"),
    (lambda: cv.from_sliding_window(0), "sliding_window"),
    (lambda: cv.to_bigbird(4), "whole blocks"),
    (lambda: cv.to_bigbird(0, cover=True), "window=0"),
    (lambda: cv.natten_pairs(5, 7), "kernel_size"),
    (lambda: cv.local_attention_pairs(10, 4), "multiple of window_size"),
    (lambda: cv.to_longformer_masks(), "T"),
])
def test_what_cannot_be_said_raises_a_clear_value_error(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_bad_types_are_type_errors():
    with pytest.raises(TypeError, match="window"):
        cv.to_longformer(2.0)
    with pytest.raises(TypeError, match="attention_window"):
        cv.from_longformer("512")


# --------------------------------------------------------------------------- documented formulas, pinned
def _loops(T, rule):
    return torch.tensor([[bool(rule(i, j)) for j in range(T)] for i in range(T)])


@SMALL
@given(T=st.integers(1, 24), left=st.integers(-1, 6), right=st.integers(-1, 6), causal=st.booleans())
def test_flash_pairs_follow_flash_attn_docstring(T, left, right, causal):
    # flash_attn_func: "query at position i will only attend to keys between
    # [i + seqlen_k - seqlen_q - window_size[0], i + seqlen_k - seqlen_q + window_size[1]] inclusive"
    def rule(i, j):
        lo = i - left if left >= 0 else -10 ** 9
        hi = i + right if right >= 0 else 10 ** 9
        return lo <= j <= hi and (not causal or j <= i)
    assert torch.equal(cv.flash_pairs(T, left, right, causal), _loops(T, rule))


@SMALL
@given(T=st.integers(1, 30), w=st.integers(0, 8), causal=st.booleans())
def test_converted_flash_setting_selects_our_pairs(T, w, causal):
    left, right = cv.to_flash_window_size(w, causal)
    assert torch.equal(cv.flash_pairs(T, left, right, causal), ours(T, w, causal))


@SMALL
@given(T=st.integers(1, 30), w=st.integers(0, 8), causal=st.booleans())
def test_natten_formula_interior_equals_ours_edges_keep_kernel_size(T, w, causal):
    k = cv.to_natten(w)
    if k > T:
        with pytest.raises(ValueError):
            cv.natten_pairs(T, k, causal)
        return
    # NATTEN (Hassani et al.): neighbourhood of k keys, start clamped to [0, T - k]
    pairs = cv.natten_pairs(T, k, causal)
    if causal:
        expected = _loops(T, lambda i, j: i - k < j <= i)
    else:
        expected = _loops(T, lambda i, j: max(0, min(i - k // 2, T - k)) <= j < max(0, min(i - k // 2, T - k)) + k)
    assert torch.equal(pairs, expected)
    if not causal:
        assert (pairs.sum(1) == k).all()
        inner = slice(w, T - w)
        assert torch.equal(pairs[inner], ours(T, w)[inner])


@SMALL
@given(T=st.integers(1, 30), sw=st.integers(1, 8))
def test_sliding_window_counts_the_query(T, sw):
    assert torch.equal(cv.sliding_window_pairs(T, sw), _loops(T, lambda i, j: i - sw < j <= i))
    assert torch.equal(cv.sliding_window_pairs(T, sw), ours(T, cv.from_sliding_window(sw), causal=True))
    assert not torch.equal(cv.sliding_window_pairs(T, sw), ours(T, sw, causal=True)) or T <= sw   # the off-by-one


@SMALL
@given(T=st.integers(1, 40), b=st.integers(1, 8))
def test_bigbird_band_is_blocks_and_bounds_hold(T, b):
    band = cv.bigbird_band_pairs(T, b)
    assert torch.equal(band, _loops(T, lambda i, j: abs(i // b - j // b) <= 1))
    inner, outer = cv.bigbird_window_bounds(b)
    assert (band >= ours(T, inner)).all() and (band <= ours(T, outer)).all()


def test_longformer_pairs_formula():
    assert torch.equal(cv.longformer_pairs(12, 6), ours(12, 3))


# --------------------------------------------------------------------------- masks in other formats
def _probe_sdpa(mask):
    B, _, T, _ = mask.shape
    q = torch.zeros(B, 1, T, T)                                           # equal scores: uniform over allowed keys
    v = torch.eye(T).expand(B, 1, T, T)                                    # value of key j = e_j
    return F.scaled_dot_product_attention(q, q, v, attn_mask=mask)        # (B, 1, T, T)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_with_the_converted_mask_reads_our_pairs(causal):
    T, w = 11, 2
    g = torch.zeros(2, T, dtype=torch.bool)
    g[0, [0, 5]] = True
    g[1, 9] = True
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[1, 8:] = True
    out = _probe_sdpa(cv.to_sdpa_mask(T, w, g, pad, causal=causal))[:, 0]
    expected = hybrid_mask(T, w, g, pad, causal=causal)
    real = ~pad                                                            # padded rows: NaN or 0, by version
    assert torch.equal((out > 0)[real], expected[real])
    assert (torch.isnan(out[pad]) | (out[pad] == 0)).all()


def test_flex_mask_mod_is_ours():
    from torch.nn.attention.flex_attention import create_mask
    T = 13
    g = torch.zeros(2, T, dtype=torch.bool)
    g[0, 3] = True
    pad = torch.zeros(2, T, dtype=torch.bool)
    pad[1, 10:] = True
    for causal in (False, True):
        mod = cv.to_flex_mask_mod(2, g, pad, causal=causal)
        got = create_mask(mod, 2, 1, T, T, device="cpu")[:, 0]
        assert torch.equal(got, hybrid_mask(T, 2, g, pad, causal=causal))


def test_longformer_masks_both_ways():
    g = torch.tensor([[True, False, False, True], [False, True, False, False]])
    pad = torch.tensor([[False, False, False, False], [False, False, True, True]])
    attention_mask, global_attention_mask = cv.to_longformer_masks(g, pad)
    assert attention_mask.dtype == global_attention_mask.dtype == torch.long
    assert attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert global_attention_mask.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0]]
    g2, pad2 = cv.from_longformer_masks(attention_mask, global_attention_mask)
    assert torch.equal(g2, g) and torch.equal(pad2, pad)
    # a padded position is never global, whatever global_attention_mask says
    g3, _ = cv.from_longformer_masks(torch.tensor([[1, 0]]), torch.tensor([[1, 1]]))
    assert g3.tolist() == [[True, False]]
    a, gl = cv.to_longformer_masks(T=3)
    assert a.tolist() == [[1, 1, 1]] and gl.tolist() == [[0, 0, 0]]
    assert cv.from_longformer_masks() == (None, None)
    with pytest.raises(ValueError, match="same shape"):
        cv.to_longformer_masks(g, pad[:, :3])


def test_longformer_layer_inputs_mark_padding_min_and_global_max():
    """What LongformerModel hands each layer: min on padding, max on global tokens, flags read from it."""
    g = torch.tensor([[True, False, True, False]])
    pad = torch.tensor([[False, False, True, True]])
    kw = cv.longformer_layer_inputs(g, pad)
    big = torch.finfo(torch.float32)
    assert kw["attention_mask"].dtype == torch.float32
    assert kw["attention_mask"].tolist() == [[big.max, 0.0, big.min, big.min]]
    assert torch.equal(kw["is_index_masked"], pad)
    assert kw["is_index_global_attn"].tolist() == [[True, False, False, False]]   # a padded position is never global
    assert kw["is_global_attn"] is True
    assert cv.longformer_layer_inputs(torch.zeros(1, 4, dtype=torch.bool), pad)["is_global_attn"] is False
    with pytest.raises(ValueError, match="same shape"):
        cv.longformer_layer_inputs(g, pad[:, :3])
    with pytest.raises(ValueError, match="key_padding_mask"):
        cv.longformer_layer_inputs(g, pad[0])


def test_qa_and_cls_global_tokens():
    sep, pad_id = 2, 1
    ids = torch.tensor([[0, 11, 12, sep, sep, 20, 21, sep, pad_id],
                        [0, 13, sep, sep, 22, 23, 24, 25, sep]])
    assert cv.qa_global_attention_mask(ids, sep).tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0],
                                                              [1, 1, 0, 0, 0, 0, 0, 0, 0]]
    assert cv.cls_global_attention_mask(ids).tolist() == [[1] + [0] * 8] * 2
    with pytest.raises(ValueError, match="separator"):
        cv.qa_global_attention_mask(torch.tensor([[0, 5, 6]]), sep)
    with pytest.raises(ValueError, match="input_ids"):
        cv.qa_global_attention_mask(torch.tensor([0, 5, 2]), sep)


@pytest.mark.parametrize("bad, error", [(2.5, TypeError), (float("nan"), TypeError), (True, TypeError), ("3", TypeError),
                                        (-3, ValueError)])
def test_flash_pairs_judges_its_window_like_every_window(bad, error):
    """Issue 22, finding 22: flash_pairs took 2.5, NaN and -3 silently; -1 (no limit) is its one negative."""
    for args in ((bad, 0), (0, bad)):
        with pytest.raises(error, match="left|right"):
            cv.flash_pairs(8, *args)
    with pytest.raises(TypeError, match="causal"):
        cv.flash_pairs(8, 1, 1, causal=1)


def test_pair_functions_take_huge_distances_as_every_key():
    """A distance past T allows what T allows (10**30 used to overflow a tensor)."""
    huge = 10 ** 30
    assert torch.equal(cv.flash_pairs(8, huge, huge), cv.flash_pairs(8, -1, -1))
    assert torch.equal(cv.longformer_pairs(8, huge), cv.longformer_pairs(8, 16))
    assert torch.equal(cv.sliding_window_pairs(8, huge), cv.sliding_window_pairs(8, 9))
    assert torch.equal(cv.bigbird_band_pairs(8, huge), cv.bigbird_band_pairs(8, 8))
