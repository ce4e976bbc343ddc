"""The flag arguments, the window clamp and an empty batch, on every implementation and backend.

* ``causal`` and ``return_weights`` must be real bools (``causal="no"`` used to mean causal) and
  ``dropout_p`` a number in [0, 1): a TypeError / ValueError that names the argument.
* A window wider than the sequence is clamped to ``T - 1`` (``(T - 1) // dilation`` when dilated)
  once, in ``check_inputs``: window = 10**7 at T = 10 is the same function as window = 9, and
  costs what window = 9 costs.
* B = 0 works: an empty output of the right shape (and empty weights).
"""
from __future__ import annotations

import pytest
import torch

import tutor.attention.flex as flex_mod
from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import (dense_attention, hybrid_attention, looped_attention, sparse_attention,
                             unfold_attention)
from tutor.attention.call import attention_call
from tutor.attention.blocked import blocked_hybrid_attention
from tutor.attention.flex import flex_hybrid_attention

pytestmark = pytest.mark.usefixtures("single_thread")

B, H, T, Dh = 2, 2, 10, 4


def _backend(name):
    def run(*args, **kwargs):
        return hybrid_attention(*args, **kwargs, backend=name)
    return run


def _sparse(impl):
    def run(*args, **kwargs):
        return sparse_attention(*args, **kwargs, impl=impl)
    return run


IMPLS = {"dense": dense_attention, "looped": looped_attention, "unfold": unfold_attention,
         "hybrid": hybrid_attention, "hybrid(blocked)": _backend("blocked"), "hybrid(flex)": _backend("flex"),
         "blocked": blocked_hybrid_attention, "flex": flex_hybrid_attention,
         **{f"sparse({i})": _sparse(i) for i in ("dense", "looped", "unfold", "hybrid")}}
DROPOUT = [name for name in IMPLS if "looped" not in name and "flex" not in name]   # take dropout_p


def inputs(B=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    if B:
        gm[0, 2] = True
        kpm[B - 1, -3:] = True
    return q, k, v, gm, kpm


# --------------------------------------------------------------------------- causal, return_weights, dropout_p
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("value", ["no", "False", 1, 0, None, torch.tensor(True)], ids=repr)
@pytest.mark.parametrize("name", ["causal", "return_weights"])
def test_flags_must_be_bools(impl, name, value):
    q, k, v, gm, kpm = inputs()
    with pytest.raises(TypeError, match=rf"{name} must be a bool.*{type(value).__name__}"):
        with torch.no_grad():
            IMPLS[impl](q, k, v, 2, gm, kpm, **{name: value})


@pytest.mark.parametrize("impl", DROPOUT)
@pytest.mark.parametrize("value, exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                        (float("nan"), ValueError), ("0.1", TypeError), (True, TypeError),
                                        (None, TypeError), ([0.1], TypeError)], ids=repr)
def test_dropout_p_is_a_number_in_0_1(impl, value, exc):
    q, k, v, gm, kpm = inputs()
    with pytest.raises(exc, match="dropout_p"):
        IMPLS[impl](q, k, v, 2, gm, kpm, dropout_p=value)


@pytest.mark.parametrize("impl", DROPOUT)
def test_dropout_p_boundaries_are_accepted(impl):
    q, k, v, gm, kpm = inputs()
    assert torch.equal(IMPLS[impl](q, k, v, 2, gm, kpm, dropout_p=0), IMPLS[impl](q, k, v, 2, gm, kpm))
    out = IMPLS[impl](q, k, v, 2, gm, kpm, dropout_p=0.999)
    assert out.shape == q.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------- the window clamp
@pytest.mark.parametrize("window, dilation, T_, want", [(10 ** 7, 1, 10, 9), (9, 1, 10, 9), (3, 1, 10, 3),
                                                         (10 ** 7, 3, 10, 3), (10 ** 7, 20, 10, 0),
                                                         (5, 1, 1, 0), (0, 1, 1, 0)])
def test_clamp_window(window, dilation, T_, want):
    q = torch.zeros(1, 1, T_, 2)
    assert attention_call(q, q, q, window, dilation=dilation).reach == want


@pytest.mark.parametrize("impl", [name for name in IMPLS if "flex" not in name])
@pytest.mark.parametrize("causal", [False, True])
def test_huge_window_is_the_window_T_minus_1(impl, causal):
    """Without the clamp unfold and blocked would build (2 * 10**7 + 1)-wide windows here."""
    q, k, v, gm, kpm = inputs()
    want = dense_attention(q, k, v, T - 1, gm, kpm, causal=causal)
    got = IMPLS[impl](q, k, v, 10 ** 7, gm, kpm, causal=causal)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert torch.equal(IMPLS[impl](q, k, v, 10 ** 7, gm, kpm, causal=causal),
                       IMPLS[impl](q, k, v, T - 1, gm, kpm, causal=causal))


def test_dilated_huge_window_equals_dense():
    q, k, v, gm, kpm = inputs()
    for impl in (dense_attention, _backend("blocked")):
        got = impl(q, k, v, 10 ** 7, gm, kpm, dilation=3)
        torch.testing.assert_close(got, dense_attention(q, k, v, 3, gm, kpm, dilation=3), atol=1e-6, rtol=1e-6)


def test_flex_plans_with_the_clamped_window(monkeypatch):
    """flex gets the clamped window from check_inputs (its kernel is faked: no compiling here)."""
    seen = []
    real_plan = flex_mod.flex_plan

    def plan(B_, T_, window, *args, **kwargs):
        seen.append(window)
        return real_plan(B_, T_, window, *args, **kwargs)

    monkeypatch.setattr(flex_mod, "flex_plan", plan)
    monkeypatch.setattr(flex_mod, "compiled_flex", lambda: lambda q, k, v, block_mask, scale: torch.zeros_like(q))
    monkeypatch.setattr(flex_mod, "flex_why_not", lambda *a: None)
    q, k, v, gm, kpm = inputs()
    with torch.no_grad():
        out = flex_hybrid_attention(q, k, v, 10 ** 7, gm, kpm)
    assert seen == [T - 1] and out.shape == q.shape


# --------------------------------------------------------------------------- an empty batch
@pytest.mark.parametrize("impl", list(IMPLS))
def test_empty_batch_gives_an_empty_output(impl):
    q, k, v, gm, kpm = inputs(B=0)
    with torch.no_grad():
        out = IMPLS[impl](q, k, v, 2, gm, kpm)
    assert out.shape == (0, H, T, Dh) and out.dtype == q.dtype


@pytest.mark.parametrize("impl", [name for name in IMPLS if "flex" not in name])
def test_empty_batch_weights_and_gradients(impl):
    q, k, v, gm, kpm = inputs(B=0)
    out, w = IMPLS[impl](q, k, v, 2, gm, kpm, return_weights=True)
    assert out.shape == (0, H, T, Dh) and w.shape == (0, H, T, T)
    if "looped" in impl:
        return                                                  # forward only
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    IMPLS[impl](q, k, v, 2, gm, kpm).sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
