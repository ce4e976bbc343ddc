"""The one global-rows module and the one empty-row convention (lse = +inf, P = 0).

``row_lse`` / ``probs_from_lse`` on all-padded rows and rows with some allowed keys, in float32,
float16 and bfloat16; ``global_rows`` against dense attention's global rows; its backward against
autograd; the partial rows over slices of the keys, merged, against the whole.
"""
from __future__ import annotations

import pytest
import torch

from tutor.attention import dense_attention
from tutor.attention.global_rows import (global_rows, global_rows_backward, global_rows_partial, finish,
                                         merge_states)
from tutor.attention.global_tokens import gather_tokens, global_slots
from tutor.attention.softmax import LOG2E, masked_softmax, probs_from_lse, row_lse
from tutor.masks import hybrid_mask

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def masked_scores(dtype):
    """(2, 3, 5) scores, -inf where masked: rows 0 and 4 of each batch all padded, the rest partly allowed."""
    g = torch.Generator().manual_seed(0)
    s = (4 * torch.randn(2, 3, 5, generator=g)).to(dtype)
    allowed = torch.rand(2, 3, 5, generator=g) < 0.6
    allowed[:, 1, 2] = True                                                # a row with at least one key
    allowed[0, 0] = False                                                  # all-padded rows
    allowed[1, 2] = False
    return s.masked_fill(~allowed, float("-inf")), allowed


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rows_have_lse_plus_inf_and_exact_zero_probabilities(dtype):
    s, allowed = masked_scores(dtype)
    lse = row_lse(s)
    empty = ~allowed.any(-1)                                               # (2, 3)
    assert lse.dtype == dtype and lse.shape == (2, 3)
    assert bool((lse[empty] == float("inf")).all()) and bool(torch.isfinite(lse[~empty]).all())
    p = probs_from_lse(s, lse)
    assert p.dtype == dtype and not bool(p.isnan().any())
    assert bool((p[~allowed] == 0).all())                                  # exact zeros: masked and empty rows
    assert bool((p[empty] == 0).all())
    want = masked_softmax(s.float(), allowed)
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert torch.allclose(p.float(), want, atol=tol, rtol=tol)
    assert torch.allclose(p[~empty].float().sum(-1), torch.ones(int((~empty).sum())), atol=tol * 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probs_from_lse_in_place_overwrites_the_scores(dtype):
    s, _ = masked_scores(dtype)
    lse = row_lse(s)
    want = probs_from_lse(s, lse)
    got = probs_from_lse(s, lse, inplace=True)
    assert got.data_ptr() == s.data_ptr() and torch.equal(got, want)


def test_a_finite_score_on_an_empty_row_still_gives_zero():
    """The point of +inf: exp(s - lse) is 0 on an empty row whatever s holds there, no guard."""
    s = torch.tensor([[1.5, -3.0, 80.0]])
    assert torch.equal(probs_from_lse(s, torch.tensor([float("inf")])), torch.zeros(1, 3))


def test_log2e_is_log2_of_e():
    assert LOG2E == pytest.approx(1 / torch.log(torch.tensor(2.0, dtype=torch.float64)).item(), rel=1e-15)


def case(causal, seed=0, B=3, H=2, T=23, Dh=8):
    """Per-sequence global counts, a padded global, padding, and an all-padded sequence."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g, dtype=torch.float64) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [2, 11, 20]] = True
    gm[1, [0, 19]] = True                                                  # 19 is padded: not a global
    gm[2, 5] = True                                                        # in the all-padded sequence
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, 17:] = True
    kpm[2] = True
    idx, valid = global_slots(gm, kpm, B, T, "cpu")                        # (B, G), (B, G)
    return q, k, v, gm, kpm, idx, valid


@pytest.mark.parametrize("causal", [False, True])
def test_global_rows_are_dense_attentions_global_rows(causal):
    q, k, v, gm, kpm, idx, valid = case(causal)
    B, H, T, Dh = q.shape
    scale = Dh ** -0.5
    rows = global_rows(gather_tokens(q, idx), k, v, idx, valid, kpm, causal, scale, torch.float64)
    out, weights = dense_attention(q, k, v, 2, gm, kpm, causal=causal, return_weights=True)
    live = valid[:, None, :, None]                                         # (B, 1, G, 1)
    assert torch.allclose(rows.out * live, gather_tokens(out, idx) * live, atol=1e-12)
    want_p = weights.gather(2, idx[:, None, :, None].expand(B, H, -1, T))  # (B, H, G, T)
    assert torch.allclose(rows.probs * live, want_p * live, atol=1e-12)
    allowed = hybrid_mask(T, 2, gm, kpm, causal=causal)[:, None]           # (B, 1, T, T)
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    want_lse = gather_tokens(torch.logsumexp(s, -1)[..., None], idx)[..., 0]  # (B, H, G)
    ok = valid[:, None, :].expand_as(rows.lse)
    assert torch.allclose(rows.lse[ok], want_lse[ok], atol=1e-12)
    assert bool((rows.lse[~ok] == float("inf")).all())                     # invalid slots: +inf
    assert bool((rows.probs[~ok] == 0).all()) and bool((rows.out[~ok] == 0).all())


@pytest.mark.parametrize("causal", [False, True])
def test_global_rows_backward_equals_autograd_and_ignores_padding_poison(causal):
    q, k, v, gm, kpm, idx, valid = case(causal, seed=1)
    qg = gather_tokens(q, idx).requires_grad_()
    k, v = k.requires_grad_(), v.requires_grad_()
    scale = 0.3
    rows = global_rows(qg, k, v, idx, valid, kpm, causal, scale, torch.float64)
    dout = torch.randn_like(rows.out)
    want = torch.autograd.grad(rows.out, (qg, k, v), dout)
    pad = kpm[:, None, :, None]
    k_bad, v_bad = k.detach().masked_fill(pad, float("nan")), v.detach().masked_fill(pad, float("inf"))  # never read
    got = global_rows_backward(qg.detach(), k_bad, v_bad, idx, valid, kpm, causal, scale, torch.float64,
                               rows.lse.detach(), rows.out.detach(), dout)
    for a, b in zip(got, want):
        assert bool(torch.isfinite(a).all()) and torch.allclose(a, b, atol=1e-12)
    poisoned = global_rows(qg.detach(), k_bad, v_bad, idx, valid, kpm, causal, scale, torch.float64)
    assert torch.allclose(poisoned.out, rows.out.detach(), atol=1e-12)
    assert bool((got[1][pad.expand_as(got[1])] == 0).all()) and bool((got[2][pad.expand_as(got[2])] == 0).all())


@pytest.mark.parametrize("causal", [False, True])
def test_partial_rows_over_slices_merge_to_the_whole(causal):
    q, k, v, gm, kpm, idx, valid = case(causal, seed=2)
    T = q.shape[2]
    qg = gather_tokens(q, idx)
    whole = global_rows(qg, k, v, idx, valid, kpm, causal, 0.5, torch.float64).out
    cuts = [0, 4, 5, 16, T]                                                # uneven slices, one of one key
    states = [global_rows_partial(qg, k[:, :, a:z], v[:, :, a:z], idx, valid, kpm[:, a:z], causal, 0.5,
                                  torch.float64, torch.arange(a, z)) for a, z in zip(cuts, cuts[1:])]
    merged = states[0]
    for st in states[1:]:
        merged = merge_states(merged, st)
    assert torch.allclose(finish(merged), whole, atol=1e-12)
