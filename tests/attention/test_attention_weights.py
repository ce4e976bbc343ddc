"""return_weights: a (B, H, T, T) probability map, zero off the mask, identical across implementations."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from strategies import Case, cases, single_thread  # noqa: F401 (fixture)
from tutor.attention import (dense_attention, hybrid_attention, looped_attention, sparse_attention,
                             unfold_attention)
from tutor.attention.blocked import blocked_hybrid_attention
from tutor.masks import hybrid_mask

pytestmark = pytest.mark.usefixtures("single_thread")

IMPLS = {
    "dense": dense_attention,
    "unfold": unfold_attention,
    "hybrid(blocked)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="blocked"),
    "hybrid(auto)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="auto"),
    "blocked(block_size=3)": lambda *a, **kw: blocked_hybrid_attention(*a, **kw, block_size=3),
    "sparse(unfold)": lambda *a, **kw: sparse_attention(*a, **kw, impl="unfold"),
    "sparse(hybrid)": lambda *a, **kw: sparse_attention(*a, **kw, impl="hybrid"),
}


def check_weights(name: str, case: Case, out: torch.Tensor, w: torch.Tensor, ref_w: torch.Tensor) -> None:
    B, H, T, _ = case.q.shape
    assert w.shape == (B, H, T, T), (name, tuple(w.shape))
    assert w.is_floating_point() and not torch.isnan(w).any(), name
    mask = hybrid_mask(T, case.window, case.global_mask, case.key_padding_mask, causal=case.causal)
    mask = mask.expand(B, T, T)[:, None].expand(B, H, T, T)             # (B, H, T, T)
    off = w[~mask]
    assert torch.equal(off, torch.zeros_like(off)), f"{name}: nonzero weight where not allowed\n{case!r}"
    assert (w >= 0).all(), name
    sums = w.double().sum(-1)                                            # (B, H, T)
    has_key = mask.any(-1)                                               # (B, H, T)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), atol=1e-5, rtol=0)
    assert torch.equal(sums[~has_key], torch.zeros_like(sums[~has_key])), f"{name}: empty rows not 0"
    if case.key_padding_mask is not None:                                # padded queries: 0-sum rows
        pad_rows = w.transpose(1, 2)[case.key_padding_mask]              # (n, H, T)
        assert torch.equal(pad_rows, torch.zeros_like(pad_rows)), name
    torch.testing.assert_close(w.double(), ref_w, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}\n{case!r}")
    wv = w.to(case.v.dtype) @ case.v                                     # (B, H, T, Dh)
    torch.testing.assert_close(out, wv, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: out != weights @ v: {m}")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(cases(max_T=24))
def test_weights_all_impls(case):
    _, ref_w = case.reference()
    outs = {name: fn(*case.args, **case.kwargs, return_weights=True) for name, fn in IMPLS.items()}
    _, dense_w = outs["dense"]
    for name, res in outs.items():
        assert isinstance(res, tuple) and len(res) == 2, name
        out, w = res
        check_weights(name, case, out, w, ref_w)
        torch.testing.assert_close(w, dense_w.to(w.dtype), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, fn_out(name, case), atol=1e-6, rtol=1e-6,
                                   msg=lambda m: f"{name}: out changes with return_weights: {m}")


def fn_out(name: str, case: Case) -> torch.Tensor:
    return IMPLS[name](*case.args, **case.kwargs)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(cases(max_B=2, max_H=2, max_T=9))
def test_weights_looped(case):
    _, ref_w = case.reference()
    for name, res in (("looped", looped_attention(*case.args, **case.kwargs, return_weights=True)),
                      ("sparse(looped)", sparse_attention(*case.args, **case.kwargs, impl="looped",
                                                          return_weights=True))):
        out, w = res
        check_weights(name, case, out, w, ref_w)


@pytest.mark.parametrize("name", ["dense", "looped", "unfold", "hybrid(blocked)"])
def test_weights_known_example(name):
    """T=4, w=0, token 0 global, q = 0: uniform rows over the allowed set, written by hand."""
    fn = looped_attention if name == "looped" else IMPLS[name]
    q = torch.zeros(1, 1, 4, 2)
    k, v = torch.randn(1, 1, 4, 2), torch.randn(1, 1, 4, 2)
    gm = torch.tensor([[True, False, False, False]])
    kpm = torch.tensor([[False, False, False, True]])
    _, w = fn(q, k, v, 0, gm, kpm, return_weights=True)
    want = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(w[0, 0].float(), want, atol=1e-6, rtol=0)
