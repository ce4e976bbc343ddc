"""Every implementation computes the function of docs/spec.md: equal to dense_attention and to a brute force.

The brute force (tests/strategies.py) builds the allowed set with plain loops and runs a float64
softmax over it; ``dense_attention`` must match it, and every other implementation must match both.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tutor.attention.blocked as blocked_mod
from strategies import Case, cases, random_qkv, single_thread  # noqa: F401 (fixture)
from tutor.attention import (dense_attention, hybrid_attention, looped_attention, sparse_attention,
                             unfold_attention)
from tutor.attention.blocked import blocked_hybrid_attention

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL, RTOL = 1e-5, 1e-5


def check_against(out: torch.Tensor, case: Case, ref: torch.Tensor, allowed: torch.Tensor, name: str) -> None:
    """out (B, H, T, Dh) equals the float64 reference; rows with no allowed key are exactly 0."""
    assert out.shape == case.q.shape, (name, tuple(out.shape))
    assert out.dtype == case.q.dtype, (name, out.dtype)
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}\n{case!r}")
    empty = ~allowed.any(-1)                                          # (B, T)
    if empty.any():
        rows = out.transpose(1, 2)[empty]                             # (n_empty, H, Dh)
        assert torch.equal(rows, torch.zeros_like(rows)), f"{name}: empty rows are not exact zeros\n{case!r}"


def unchanged(case: Case):
    """Snapshot of the inputs, to prove no implementation writes into them."""
    return [t.clone() if t is not None else None for t in case.args[:3] + case.args[4:]]


def assert_unchanged(case: Case, snap) -> None:
    for before, after in zip(snap, case.args[:3] + case.args[4:]):
        assert (before is None and after is None) or torch.equal(before, after), "an input was modified"


def fast_impls(case: Case):
    """name -> output, for every fast path (looped is tested separately on small T)."""
    a, kw = case.args, case.kwargs
    return {
        "dense": dense_attention(*a, **kw),
        "unfold": unfold_attention(*a, **kw),
        "hybrid(blocked)": hybrid_attention(*a, **kw, backend="blocked"),
        "hybrid(auto)": hybrid_attention(*a, **kw, backend="auto"),
        "hybrid(default)": hybrid_attention(*a, **kw),
        "sparse(dense)": sparse_attention(*a, **kw, impl="dense"),
        "sparse(unfold)": sparse_attention(*a, **kw, impl="unfold"),
        "sparse(hybrid)": sparse_attention(*a, **kw, impl="hybrid"),
        "sparse(hybrid, blocked)": sparse_attention(*a, **kw, impl="hybrid", backend="blocked"),
        "sparse(default)": sparse_attention(*a, **kw),
    }


@settings(max_examples=200, deadline=None, derandomize=True)
@given(cases())
def test_fast_impls_match_dense_and_brute_force(case):
    ref, _ = case.reference()
    allowed = case.allowed()
    snap = unchanged(case)
    outs = fast_impls(case)
    assert_unchanged(case, snap)
    for name, out in outs.items():
        check_against(out, case, ref, allowed, name)
        torch.testing.assert_close(out, outs["dense"], atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{name} vs dense: {m}\n{case!r}")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(cases(max_B=2, max_H=2, max_T=10))
def test_looped_matches_dense_and_brute_force(case):
    ref, _ = case.reference()
    allowed = case.allowed()
    snap = unchanged(case)
    for name, out in (("looped", looped_attention(*case.args, **case.kwargs)),
                      ("sparse(looped)", sparse_attention(*case.args, **case.kwargs, impl="looped"))):
        check_against(out, case, ref, allowed, name)
        torch.testing.assert_close(out, dense_attention(*case.args, **case.kwargs), atol=ATOL, rtol=RTOL)
    assert_unchanged(case, snap)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(cases(max_T=40), st.integers(1, 9))
def test_blocked_explicit_block_size(case, block_size):
    ref, _ = case.reference()
    out = blocked_hybrid_attention(*case.args, **case.kwargs, block_size=block_size)
    check_against(out, case, ref, case.allowed(), f"blocked(block_size={block_size})")


@settings(max_examples=80, deadline=None, derandomize=True)
@given(cases(min_T=2, max_T=40), st.sampled_from([None, 1, 2, 3, 4, 8]), st.sampled_from([1, 7, 64, 500]))
def test_blocked_many_chunks(case, block_size, chunk_elements):
    """CHUNK_ELEMENTS patched tiny: each chunk holds one or a few query blocks."""
    ref, _ = case.reference()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocked_mod, "CHUNK_ELEMENTS", chunk_elements)
        out = blocked_hybrid_attention(*case.args, **case.kwargs, block_size=block_size)
        out_h = hybrid_attention(*case.args, **case.kwargs, backend="blocked")
    name = f"blocked(block_size={block_size}, CHUNK_ELEMENTS={chunk_elements})"
    check_against(out, case, ref, case.allowed(), name)
    check_against(out_h, case, ref, case.allowed(), "hybrid " + name)


# --------------------------------------------------------------------------- hand-picked cases
def _case(B, H, T, Dh, window, gm=None, kpm=None, causal=False, scale=None, seed=0) -> Case:
    return Case(*random_qkv(B, H, T, Dh, seed), window, gm, kpm, causal, scale)


def _bool(rows):
    return torch.tensor(rows, dtype=torch.bool)


HAND = {
    "T=1": _case(1, 1, 1, 4, 0),
    "T=1 padded": _case(2, 1, 1, 3, 2, kpm=_bool([[True], [False]])),
    "w=0 no globals (diagonal only)": _case(2, 2, 9, 3, 0),
    "w=0 causal": _case(1, 2, 9, 3, 0, causal=True),
    "w>=T": _case(2, 2, 7, 4, 7),
    "w>>T causal": _case(1, 3, 7, 2, 100, causal=True),
    "global first+last": _case(2, 2, 17, 4, 2, gm=_bool([[1] + [0] * 15 + [1]] * 2)),
    "all global": _case(1, 2, 6, 3, 1, gm=torch.ones(1, 6, dtype=torch.bool)),
    "different G per batch": _case(3, 2, 11, 4, 1, gm=_bool([[0] * 11, [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
                                                            [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1]])),
    "global inside window counted once": _case(1, 1, 5, 2, 2, gm=_bool([[0, 0, 1, 0, 0]])),
    "padded global token": _case(1, 2, 8, 3, 1, gm=_bool([[0, 0, 0, 0, 0, 0, 0, 1]]),
                                 kpm=_bool([[0, 0, 0, 0, 0, 0, 1, 1]])),
    "fully padded sequence": _case(2, 2, 6, 3, 1, gm=_bool([[1, 0, 0, 0, 0, 0]] * 2),
                                   kpm=_bool([[1] * 6, [0, 0, 0, 0, 1, 1]])),
    "causal, leading padding (empty rows)": _case(1, 2, 6, 3, 1, causal=True, kpm=_bool([[0, 1, 1, 1, 0, 0]])),
    "causal + global": _case(2, 2, 13, 4, 2, gm=_bool([[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]] * 2), causal=True),
    "negative scale": _case(1, 2, 10, 4, 3, gm=_bool([[1] + [0] * 9]), scale=-0.7),
    "scale=0 (uniform)": _case(1, 1, 10, 4, 2, scale=0.0),
    "Dh=1": _case(2, 1, 12, 1, 1),
}


@pytest.mark.parametrize("name", list(HAND))
def test_hand_picked(name):
    case = HAND[name]
    ref, _ = case.reference()
    allowed = case.allowed()
    outs = fast_impls(case)
    outs["looped"] = looped_attention(*case.args, **case.kwargs)
    for bs in (1, 2, 3, 16):
        outs[f"blocked(block_size={bs})"] = blocked_hybrid_attention(*case.args, **case.kwargs, block_size=bs)
    for impl_name, out in outs.items():
        check_against(out, case, ref, allowed, f"{name} / {impl_name}")


def test_scale_zero_is_uniform_over_allowed_keys():
    """An independent check of the reference itself: scale=0 averages v over the allowed keys."""
    case = HAND["scale=0 (uniform)"]
    allowed = case.allowed().double()                                 # (1, T, T)
    want = (allowed / allowed.sum(-1, keepdim=True))[:, None] @ case.v.double()  # (1, H, T, Dh)
    torch.testing.assert_close(dense_attention(*case.args, **case.kwargs).double(), want, atol=1e-6, rtol=0)


def test_global_key_in_window_is_not_double_counted():
    """q = 0: softmax is uniform over the allowed *set*; a duplicated key would get weight 2/6."""
    T, w = 5, 2
    q = torch.zeros(1, 1, T, 1)
    k = torch.randn(1, 1, T, 1)
    v = torch.arange(T, dtype=torch.float32).reshape(1, 1, T, 1)
    gm = _bool([[0, 0, 1, 0, 0]])
    want = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]).reshape(1, 1, T, 1)  # mean of the window (+ global)
    for fn in (dense_attention, looped_attention, unfold_attention, hybrid_attention):
        torch.testing.assert_close(fn(q, k, v, w, gm), want, atol=1e-6, rtol=0, msg=fn.__name__)


def test_window_integer_kinds():
    """window may be any integer kind a careful user has at hand (numpy int, 0-d int tensor)."""
    np = pytest.importorskip("numpy")
    case = _case(1, 2, 9, 3, 2, gm=_bool([[1] + [0] * 8]))
    want = dense_attention(*case.args)
    for w in (np.int64(2), torch.tensor(2)):
        for fn in (dense_attention, looped_attention, unfold_attention, hybrid_attention):
            torch.testing.assert_close(fn(case.q, case.k, case.v, w, case.global_mask), want,
                                       atol=ATOL, rtol=RTOL)
