"""tutor.masks against brute-force loops over (b, i, j): every factory, combinator and hybrid_mask."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import (as_lists, brute_allowed, brute_allowed_tensor, global_masks, padding_masks,
                        single_thread, windows)  # noqa: F401 (single_thread is a fixture)
from tutor.costs import count_allowed
from tutor.masks import (and_masks, create_mask, generate_causal, generate_causal_window,
                         generate_global, generate_key_padding, generate_local_window, hybrid_mask,
                         hybrid_mask_mod, or_masks)

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def grid(B: int, T: int, rule) -> torch.Tensor:
    """Brute force: evaluate a plain-Python ``rule(b, i, j) -> bool`` on every (b, i, j)."""
    return torch.tensor([[[bool(rule(b, i, j)) for j in range(T)] for i in range(T)] for b in range(B)],
                        dtype=torch.bool).reshape(B, T, T)


def assert_mask_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.bool, got.dtype
    assert tuple(got.shape) == tuple(want.shape), (tuple(got.shape), tuple(want.shape))
    bad = (got != want).nonzero().tolist()
    assert not bad, f"masks differ at (b, i, j) = {bad[:10]}"


# --------------------------------------------------------------------------- factories
@SETTINGS
@given(st.integers(1, 3), st.integers(1, 24), st.data())
def test_local_window(B, T, data):
    w = data.draw(windows(T))
    mod = generate_local_window(w)
    assert_mask_equal(create_mask(mod, B, T), grid(B, T, lambda b, i, j: abs(i - j) <= w))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 24))
def test_causal(B, T):
    assert_mask_equal(create_mask(generate_causal(), B, T), grid(B, T, lambda b, i, j: j <= i))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 24), st.data())
def test_causal_window(B, T, data):
    w = data.draw(windows(T))
    want = grid(B, T, lambda b, i, j: 0 <= i - j <= w)
    assert_mask_equal(create_mask(generate_causal_window(w), B, T), want)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 24), st.data())
def test_global(B, T, data):
    gm = data.draw(global_masks(B, T, kinds=("empty", "first", "last", "first_last", "all",
                                               "random", "per_batch_count")))
    g = as_lists(gm)
    want = grid(B, T, lambda b, i, j: g[b][i] or g[b][j])
    assert_mask_equal(create_mask(generate_global(gm), B, T), want)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 24), st.data())
def test_key_padding(B, T, data):
    kpm = data.draw(padding_masks(B, T, kinds=("empty", "tail", "random", "one_fully_padded", "all_padded")))
    p = as_lists(kpm)
    want = grid(B, T, lambda b, i, j: not p[b][i] and not p[b][j])
    got = create_mask(generate_key_padding(kpm), B, T)
    assert_mask_equal(got, want)
    for b in range(B):                  # a padded query reads nothing, a padded key is read by no one
        for i in range(T):
            if p[b][i]:
                assert not got[b, i].any() and not got[b, :, i].any()


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 16), st.data())
def test_and_or_masks(B, T, data):
    w = data.draw(windows(T))
    gm = data.draw(global_masks(B, T, kinds=("random", "first", "per_batch_count")))
    kpm = data.draw(padding_masks(B, T, kinds=("random", "tail")))
    g, p = as_lists(gm), as_lists(kpm)
    local, glob, pad, causal = (generate_local_window(w), generate_global(gm),
                                generate_key_padding(kpm), generate_causal())
    rules = {
        "and(local, causal)": (and_masks(local, causal), lambda b, i, j: abs(i - j) <= w and j <= i),
        "or(local, global)": (or_masks(local, glob), lambda b, i, j: abs(i - j) <= w or g[b][i] or g[b][j]),
        "or(causal)": (or_masks(causal), lambda b, i, j: j <= i),
        "and(or(local, global), not pad)": (
            and_masks(or_masks(local, glob), pad),
            lambda b, i, j: (abs(i - j) <= w or g[b][i] or g[b][j]) and not (p[b][i] or p[b][j])),
        "and(local, causal, not pad)": (
            and_masks(local, causal, pad), lambda b, i, j: abs(i - j) <= w and j <= i and not (p[b][i] or p[b][j])),
        "or(local, causal, global)": (
            or_masks(local, causal, glob), lambda b, i, j: abs(i - j) <= w or j <= i or g[b][i] or g[b][j]),
    }
    for name, (mod, rule) in rules.items():
        got, want = create_mask(mod, B, T), grid(B, T, rule)
        assert not (got != want).any(), f"{name}: differs at {(got != want).nonzero().tolist()[:5]}"


def test_and_or_masks_need_an_argument():
    with pytest.raises(ValueError, match="and_masks"):
        and_masks()
    with pytest.raises(ValueError, match="or_masks"):
        or_masks()


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 12), st.data())
def test_mask_mods_work_elementwise(B, T, data):
    """FlexAttention calls a mask_mod with 0-d index tensors: the answer must match the grid."""
    w = data.draw(windows(T))
    gm = data.draw(global_masks(B, T, kinds=("random",)))
    kpm = data.draw(padding_masks(B, T, kinds=("random",)))
    causal = data.draw(st.booleans())
    mod = hybrid_mask_mod(w, gm, kpm, causal=causal)
    want = brute_allowed(T, w, as_lists(gm), as_lists(kpm), causal)
    h = torch.tensor(0)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                got = mod(torch.tensor(b), h, torch.tensor(i), torch.tensor(j))
                assert got.dtype == torch.bool and got.dim() == 0
                assert bool(got) == want[b][i][j], (b, i, j)


def test_create_mask_shape_and_dtype():
    m = create_mask(generate_local_window(1), 2, 5)
    assert m.shape == (2, 5, 5) and m.dtype == torch.bool
    m[0, 0, 0] = False                              # a real tensor, not a broadcast view
    assert m[1, 0, 0]


def test_mask_names():
    names = {
        generate_local_window(3).__name__, generate_local_window(4).__name__, generate_causal().__name__,
        generate_causal_window(3).__name__, generate_global(torch.zeros(1, 4, dtype=torch.bool)).__name__,
        generate_key_padding(torch.zeros(1, 4, dtype=torch.bool)).__name__,
    }
    assert len(names) == 6 and all(isinstance(n, str) and n for n in names), names
    assert "3" in generate_local_window(3).__name__ and "3" in generate_causal_window(3).__name__
    local, causal = generate_local_window(2), generate_causal()
    for combined in (and_masks(local, causal), or_masks(local, causal)):
        assert local.__name__ in combined.__name__ and causal.__name__ in combined.__name__
    assert and_masks(local, causal).__name__ != or_masks(local, causal).__name__
    assert "2" in hybrid_mask_mod(2, torch.zeros(1, 4, dtype=torch.bool), causal=True).__name__


# --------------------------------------------------------------------------- hybrid_mask
@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 20), st.booleans(), st.data())
def test_hybrid_mask_matches_brute_force(B, T, causal, data):
    w = data.draw(windows(T))
    gm = data.draw(global_masks(B, T))
    kpm = data.draw(padding_masks(B, T))
    got = hybrid_mask(T, w, gm, kpm, causal=causal)
    B_out = B if (gm is not None or kpm is not None) else 1
    want = brute_allowed_tensor(T, w, gm, kpm, causal, B_out)
    assert_mask_equal(got, want)
    assert count_allowed(got) == int(want.sum())
    if kpm is not None:                              # padded query rows and key columns all False
        assert not got[kpm].any()
        assert not got.transpose(1, 2)[kpm].any()
    if kpm is None and gm is None:                   # every unpadded row can at least read itself
        assert got[0].diagonal().all()


def test_hybrid_mask_shapes():
    assert hybrid_mask(7, 2).shape == (1, 7, 7)
    assert hybrid_mask(7, 2, causal=True).shape == (1, 7, 7)
    g = torch.zeros(3, 7, dtype=torch.bool)
    assert hybrid_mask(7, 2, g).shape == (3, 7, 7)
    assert hybrid_mask(7, 2, None, g).shape == (3, 7, 7)
    assert hybrid_mask(7, 2, g, g).shape == (3, 7, 7)
    assert hybrid_mask(1, 0).tolist() == [[[True]]]


def test_hybrid_mask_known_example():
    """T=6, w=1, token 0 global, token 5 padding (hand-written)."""
    g = torch.tensor([[True, False, False, False, False, False]])
    p = torch.tensor([[False, False, False, False, False, True]])
    want = [[1, 1, 1, 1, 1, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 0, 1, 1, 1, 0],
            [1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0]]
    assert hybrid_mask(6, 1, g, p).int()[0].tolist() == want
    want_causal = [[1 if (want[i][j] and j <= i) else 0 for j in range(6)] for i in range(6)]
    assert hybrid_mask(6, 1, g, p, causal=True).int()[0].tolist() == want_causal


def test_hybrid_mask_device():
    assert hybrid_mask(4, 1, device="cpu").device.type == "cpu"
    g = torch.zeros(1, 4, dtype=torch.bool, device="meta")
    assert hybrid_mask(4, 1, g).device.type == "meta"       # follows the masks by default


# --------------------------------------------------------------------------- bad input
B2 = torch.zeros(2, 5, dtype=torch.bool)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(T=0, window=1), ValueError, r"\bT\b"),
    (dict(T=-3, window=1), ValueError, r"\bT\b"),
    (dict(T=5.0, window=1), (TypeError, ValueError), r"\bT\b"),
    (dict(T=True, window=1), (TypeError, ValueError), r"\bT\b"),
    (dict(T=5, window=-1), ValueError, r"window.*-1"),
    (dict(T=5, window=1.5), TypeError, r"window.*float"),
    (dict(T=5, window=2.0), TypeError, r"window.*float"),
    (dict(T=5, window=True), TypeError, r"window.*bool"),
    (dict(T=5, window="2"), TypeError, r"window.*str"),
    (dict(T=5, window=1, global_mask=[[True] * 5]), TypeError, r"global_mask.*list"),
    (dict(T=5, window=1, global_mask=torch.zeros(2, 5)), TypeError, r"global_mask.*float32"),
    (dict(T=5, window=1, global_mask=torch.zeros(2, 5, dtype=torch.uint8)), TypeError, r"global_mask.*uint8"),
    (dict(T=5, window=1, global_mask=torch.zeros(2, 6, dtype=torch.bool)), ValueError,
     r"global_mask.*\(2, 6\)"),
    (dict(T=5, window=1, global_mask=torch.zeros(5, dtype=torch.bool)), ValueError, r"global_mask.*\(5,\)"),
    (dict(T=5, window=1, global_mask=torch.zeros(2, 1, 5, dtype=torch.bool)), ValueError,
     r"global_mask.*\(2, 1, 5\)"),
    (dict(T=5, window=1, key_padding_mask=torch.ones(2, 5, dtype=torch.int64)), TypeError,
     r"key_padding_mask.*int64"),
    (dict(T=5, window=1, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError,
     r"key_padding_mask.*\(2, 4\)"),
    (dict(T=5, window=1, global_mask=B2, key_padding_mask=torch.zeros(3, 5, dtype=torch.bool)), ValueError,
     r"global_mask.*key_padding_mask.*\(2, 5\).*\(3, 5\)"),
])
def test_hybrid_mask_bad_input(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        hybrid_mask(**kwargs)
