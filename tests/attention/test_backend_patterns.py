"""Notebook 05's options on the memory-linear backends: ``dilation`` and ``pattern``.

blocked runs the dilated window (equal to ``dense_attention(..., dilation=d)``) and refuses a
pattern; flex runs both (its BlockMask cache tells patterns apart by identity); ``auto`` sends a
pattern to flex or raises, never to a silent dense (T, T).
"""
from __future__ import annotations

import itertools

import pytest
import torch

import tutor.attention.block_masks as bm_mod
import tutor.attention.flex as flex_mod
import tutor.attention.hybrid as hybrid_mod
from tutor.attention import choose_backend, dense_attention, hybrid_attention, sparse_attention
from tutor.attention.blocked import blocked_hybrid_attention
from tutor.patterns import generate_bigbird_random, generate_lsh_buckets

FLEX_OK = flex_mod.flex_why_not(torch.zeros(1, 1, 1, 16), False, False) is None
needs_flex = pytest.mark.skipif(not FLEX_OK, reason="compiled FlexAttention cannot run on this machine")


def make_case(B=2, H=2, T=50, Dh=8, dtype=torch.float32, seed=0, globals_=True, padding=True):
    """Seeded q, k, v (B, H, T, Dh), a few globals and padding at the end of sequence 1."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g).to(dtype) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    if globals_:
        gm[0, [1, T // 2]] = True
        gm[B - 1, [0, T - 1]] = True              # the last one padded below
    if padding:
        kpm[B - 1, T - max(1, T // 5):] = True
    return q, k, v, (gm if globals_ else None), (kpm if padding else None)


# --------------------------------------------------------------------------- blocked + dilation
@pytest.mark.parametrize("window, dilation, T, causal, block_size",
                         [c for c in itertools.product([1, 3, 7], [2, 3, 5], [9, 50], [False, True], [None, 8])])
def test_blocked_dilation_equals_dense(window, dilation, T, causal, block_size):
    q, k, v, gm, kpm = make_case(T=T)
    got = blocked_hybrid_attention(q, k, v, window, gm, kpm, causal=causal, dilation=dilation, block_size=block_size)
    want = dense_attention(q, k, v, window, gm, kpm, causal=causal, dilation=dilation)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    plain = dense_attention(q, k, v, window, gm, kpm, causal=causal)
    assert not torch.allclose(want, plain, atol=1e-4)           # dilation really changed the answer


@pytest.mark.parametrize("causal", [False, True])
def test_hybrid_blocked_dilation_weights_equal_dense(causal):
    q, k, v, gm, kpm = make_case(T=70)
    out, w = hybrid_attention(q, k, v, 4, gm, kpm, causal=causal, dilation=3, return_weights=True,
                              backend="blocked")
    want_out, want_w = dense_attention(q, k, v, 4, gm, kpm, causal=causal, dilation=3, return_weights=True)
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, want_w, atol=1e-6, rtol=1e-5)
    assert torch.equal(w > 0, want_w > 0)                       # the same allowed pairs


def test_blocked_dilation_without_masks_and_dilation_one_is_unchanged():
    q, k, v, _, _ = make_case(T=40, globals_=False, padding=False)
    torch.testing.assert_close(blocked_hybrid_attention(q, k, v, 2, dilation=4), dense_attention(q, k, v, 2, dilation=4),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(hybrid_attention(q, k, v, 3, backend="blocked", dilation=1),
                       hybrid_attention(q, k, v, 3, backend="blocked"))


def test_blocked_dilation_gradcheck():
    q, k, v, gm, kpm = make_case(B=1, H=1, T=11, Dh=3, dtype=torch.float64)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda a, b, c: hybrid_attention(a, b, c, 2, gm, kpm, dilation=2, backend="blocked"), (q, k, v))


def test_blocked_rejects_pattern_and_bad_dilation():
    q, k, v, gm, kpm = make_case(T=20)
    pattern = generate_bigbird_random(20, 4, 1, seed=0)
    with pytest.raises(ValueError, match="flex"):
        blocked_hybrid_attention(q, k, v, 2, gm, kpm, pattern=pattern)
    with pytest.raises(ValueError, match="flex"):
        hybrid_attention(q, k, v, 2, gm, kpm, backend="blocked", pattern=pattern)
    with pytest.raises(ValueError, match="dilation"):
        hybrid_attention(q, k, v, 2, backend="blocked", dilation=0)
    with pytest.raises(TypeError, match="dilation"):
        hybrid_attention(q, k, v, 2, backend="blocked", dilation=1.5)
    with pytest.raises(TypeError, match="pattern"):
        hybrid_attention(q, k, v, 2, backend="auto", pattern="bigbird")


def test_sparse_attention_passes_dilation_through():
    q, k, v, gm, kpm = make_case(T=30)
    got = sparse_attention(q, k, v, 2, gm, kpm, impl="hybrid", backend="blocked", dilation=3)
    torch.testing.assert_close(got, dense_attention(q, k, v, 2, gm, kpm, dilation=3), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- flex: plans and cache
def test_flex_plan_with_dilation_or_pattern_equals_create_block_mask():
    """Band widened to w*d, and a full grid for a pattern: same tiles as the all-pairs builder."""
    from torch.nn.attention.flex_attention import create_block_mask
    T = 530
    _, _, _, gm, kpm = make_case(T=T)
    pattern = generate_bigbird_random(T, 64, 2, seed=3)
    for kw in ({"dilation": 40}, {"pattern": pattern}, {"pattern": pattern, "dilation": 3}):
        for layout in ("global_first", "in_place"):
            bm, _, _, Gp = bm_mod.flex_plan(2, T, 4, gm, kpm, False, torch.device("cpu"), layout, **kw)
            want = create_block_mask(bm.mask_mod, 2, None, T + Gp, T + Gp, device="cpu")
            assert torch.equal(bm.to_dense(), want.to_dense()), (kw, layout)
            assert torch.equal(bm.full_kv_num_blocks, want.full_kv_num_blocks), (kw, layout)


def test_flex_cache_tells_patterns_apart(monkeypatch):
    monkeypatch.setattr(bm_mod, "_CACHE", type(bm_mod._CACHE)())
    T = 256
    p1 = generate_bigbird_random(T, 32, 2, seed=1)
    p2 = generate_bigbird_random(T, 32, 2, seed=2)                # same shape, other blocks
    dev = torch.device("cpu")
    a = bm_mod.flex_plan(1, T, 4, None, None, False, dev, pattern=p1)
    b = bm_mod.flex_plan(1, T, 4, None, None, False, dev, pattern=p2)
    assert a is not b and a[0].mask_mod is not b[0].mask_mod
    assert bm_mod.flex_plan(1, T, 4, None, None, False, dev, pattern=p1) is a   # same object: hit
    plain = bm_mod.flex_plan(1, T, 4, None, None, False, dev)
    dil = bm_mod.flex_plan(1, T, 4, None, None, False, dev, dilation=2)
    assert len({id(x) for x in (a, b, plain, dil)}) == 4
    assert any(p1 in key for key in bm_mod._CACHE)            # the cache keeps the pattern alive


def test_flex_rejects_a_pattern_built_for_another_batch():
    """The door (attention_call) refuses it before any block mask is built or compiled."""
    x = torch.randn(1, 64, 8)
    lsh = generate_lsh_buckets(x, 4, seed=0)                     # batch_size 1
    q = torch.randn(2, 1, 64, 8)                                 # (B=2, H, T, Dh)
    with pytest.raises(ValueError, match=r"pattern.*B=1.*\(2, 1, 64, 8\)"):
        flex_mod.flex_hybrid_attention(q, q, q, 2, pattern=lsh)
    with pytest.raises(ValueError, match=r"pattern.*B=1.*\(2, 1, 64, 8\)"):
        hybrid_attention(q, q, q, 2, pattern=lsh, backend="flex")


# --------------------------------------------------------------------------- flex: running it (compiles)
@pytest.mark.slow
@needs_flex
def test_flex_dilation_equals_dense():
    q, k, v, gm, kpm = make_case(T=160, Dh=16)
    with torch.no_grad():
        got = hybrid_attention(q, k, v, 5, gm, kpm, dilation=3, backend="flex")
    torch.testing.assert_close(got, dense_attention(q, k, v, 5, gm, kpm, dilation=3), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@needs_flex
def test_flex_patterns_equal_dense():
    """BigBird random blocks and LSH buckets on the same (compiled once) shape."""
    T = 160
    q, k, v, gm, kpm = make_case(T=T, Dh=16, seed=1)
    bigbird = generate_bigbird_random(T, 16, 2, seed=0)
    lsh = generate_lsh_buckets(q[:, 0].float(), 4, seed=0)           # per sequence, B = 2
    with torch.no_grad():
        for pattern, causal in ((bigbird, False), (lsh, True)):
            got = hybrid_attention(q, k, v, 3, gm, kpm, causal=causal, pattern=pattern, backend="flex")
            want = dense_attention(q, k, v, 3, gm, kpm, causal=causal, pattern=pattern)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            assert not torch.allclose(want, dense_attention(q, k, v, 3, gm, kpm, causal=causal), atol=1e-4)
        got = sparse_attention(q, k, v, 3, gm, kpm, impl="hybrid", pattern=bigbird)   # auto -> flex on CPU
    torch.testing.assert_close(got, dense_attention(q, k, v, 3, gm, kpm, pattern=bigbird), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- auto routing
def test_auto_routes_dilation_to_blocked_on_cpu():
    q = torch.randn(1, 1, 8, 16)
    assert choose_backend(q, dilation=2).name == "blocked"
    assert choose_backend(q, needs_grad=True, dilation=2).name == "blocked"


def test_auto_routes_pattern_to_flex_or_raises(monkeypatch):
    q = torch.randn(1, 1, 8, 16)
    pattern = generate_bigbird_random(8, 4, 1, seed=0)
    if FLEX_OK:
        assert choose_backend(q, pattern=pattern).name == "flex"
    with pytest.raises(ValueError, match="flex.*dense_attention"):
        choose_backend(q, needs_grad=True, pattern=pattern)       # CPU flex has no backward
    with pytest.raises(ValueError, match="flex"):
        choose_backend(q, return_weights=True, pattern=pattern)
    monkeypatch.setattr(hybrid_mod, "_broken", {"flex": "RuntimeError: no compiler"})
    with pytest.raises(ValueError, match="dense_attention"):
        choose_backend(q, pattern=pattern)                        # never a silent dense fallback


def test_auto_on_cuda_skips_backends_without_the_feature(monkeypatch):
    q = torch.randn(1, 1, 8, 16)
    monkeypatch.setattr(hybrid_mod, "auto_order", lambda q, needs_grad: ("triton", "flex", "blocked"))
    for name in ("triton", "flex", "blocked"):
        old = hybrid_mod.BACKENDS[name]
        monkeypatch.setitem(hybrid_mod.BACKENDS, name, hybrid_mod.Backend(name, old.fn, lambda *a: None,
                                                                         old.summary, old.features))
    assert choose_backend(q).name == "triton"
    assert choose_backend(q, dilation=2).name == "flex"           # triton has no dilation
    with pytest.raises(ValueError, match="triton.*dilation"):
        choose_backend(q, "triton", dilation=2)


def test_dense_rejects_a_per_sequence_pattern_built_for_another_batch():
    from tutor.attention import dense_attention
    from tutor.patterns import generate_lsh_buckets
    pattern = generate_lsh_buckets(torch.randn(1, 16, 8), 4, 0)           # built for B = 1
    q = torch.randn(2, 1, 16, 8)                                           # (B=2, H, T, Dh)
    with pytest.raises(ValueError, match="B=1"):
        dense_attention(q, q, q, 1, pattern=pattern)
