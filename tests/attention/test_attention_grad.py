"""Autograd: gradcheck in float64, cross-implementation gradients, no NaN from empty rows."""
from __future__ import annotations

import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import dense_attention, hybrid_attention, sparse_attention, unfold_attention
from tutor.attention.blocked import blocked_hybrid_attention

pytestmark = pytest.mark.usefixtures("single_thread")

GRAD_IMPLS = {
    "dense": dense_attention,
    "unfold": unfold_attention,
    "hybrid(blocked)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="blocked"),
    "hybrid(auto)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="auto"),
    "blocked(block_size=2)": lambda *a, **kw: blocked_hybrid_attention(*a, **kw, block_size=2),
    "sparse(unfold)": lambda *a, **kw: sparse_attention(*a, **kw, impl="unfold"),
}


def flags(B=2, T=6):
    """Globals that differ per batch element, tail padding that covers one global token."""
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [1, 4]] = True
    gm[1, 5] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, T - 2:] = True
    return gm, kpm


SETUPS = {
    "local": dict(window=1, masks=False, causal=False),
    "local causal": dict(window=2, masks=False, causal=True),
    "global+padding": dict(window=1, masks=True, causal=False),
    "global+padding causal": dict(window=1, masks=True, causal=True),
    "window>=T global+padding": dict(window=6, masks=True, causal=False),
}


def qkv(dtype, B=2, H=2, T=7, Dh=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, Dh, generator=g, dtype=dtype).requires_grad_() for _ in range(3))


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("impl", list(GRAD_IMPLS))
def test_gradcheck_float64(impl, setup):
    s = SETUPS[setup]
    gm, kpm = flags() if s["masks"] else (None, None)
    fn = GRAD_IMPLS[impl]

    def f(q, k, v):
        return fn(q, k, v, s["window"], gm, kpm, causal=s["causal"])

    assert torch.autograd.gradcheck(f, qkv(torch.float64, T=6, Dh=2), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradcheck_custom_scale():
    gm, kpm = flags()
    for name, fn in GRAD_IMPLS.items():
        assert torch.autograd.gradcheck(lambda q, k, v: fn(q, k, v, 2, gm, kpm, scale=0.37),
                                        qkv(torch.float64, H=1, T=6, Dh=2, seed=3)), name


def test_gradients_agree_float32():
    B, H, T, Dh = 2, 3, 19, 5
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [0, 9]] = True
    gm[1, 18] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, 15:] = True
    upstream = torch.randn(B, H, T, Dh, generator=torch.Generator().manual_seed(7))
    for causal in (False, True):
        grads = {}
        for name, fn in GRAD_IMPLS.items():
            q, k, v = qkv(torch.float32, B, H, T, Dh, seed=11)
            (fn(q, k, v, 3, gm, kpm, causal=causal) * upstream).sum().backward()
            grads[name] = (q.grad, k.grad, v.grad)
        for name, gs in grads.items():
            for which, g, g_ref in zip("qkv", gs, grads["dense"]):
                torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4,
                                           msg=lambda m: f"d{which} of {name} (causal={causal}): {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("impl", list(GRAD_IMPLS))
def test_gradients_of_padded_and_empty_rows(impl, dtype):
    """A fully padded sequence and padded tokens: gradients finite, exactly 0 at padded positions."""
    B, H, T, Dh = 2, 2, 8, 4
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[0] = True                                         # every row of sequence 0 is empty
    kpm[1, [0, 5, 6]] = True
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, [0, 3]] = True                                  # token 0 is a padded global token
    fn = GRAD_IMPLS[impl]
    for causal in (False, True):
        q, k, v = qkv(dtype, B, H, T, Dh, seed=5)
        out, w = fn(q, k, v, 1, gm, kpm, causal=causal, return_weights=True)
        (out.square().sum() + w.sum()).backward()
        for name, t in (("q", q), ("k", k), ("v", v)):
            assert torch.isfinite(t.grad).all(), f"{impl}: non-finite d{name} (causal={causal})"
            padded = t.grad.transpose(1, 2)[kpm]                # (n_padded, H, Dh)
            assert torch.equal(padded, torch.zeros_like(padded)), f"{impl}: d{name} nonzero at padding"
        assert q.grad.transpose(1, 2)[~kpm].abs().sum() > 0      # and real positions do get gradient


def test_looped_forward_in_autograd_context():
    """looped may be forward-only, but must not fail when inputs require grad."""
    from tutor.attention import looped_attention
    q, k, v = qkv(torch.float32, 1, 1, 5, 2)
    want = dense_attention(q, k, v, 1)
    torch.testing.assert_close(looped_attention(q, k, v, 1).detach(), want.detach(), atol=1e-6, rtol=1e-6)
