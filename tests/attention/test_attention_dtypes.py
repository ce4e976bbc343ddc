"""Low-precision inputs, huge logits, empty rows and float64, for every implementation."""
from __future__ import annotations

import pytest
import torch

from strategies import brute_allowed_tensor, reference_attention, single_thread  # noqa: F401 (fixture)
from tutor.attention import dense_attention, hybrid_attention, looped_attention, sparse_attention, unfold_attention
from tutor.attention.blocked import blocked_hybrid_attention

pytestmark = pytest.mark.usefixtures("single_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOW = [torch.float16, torch.bfloat16]
ALL = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# output rounding of a value of size ~4 plus float32 score noise on logits of ~1e4
TOL = {torch.float16: dict(atol=4e-3, rtol=4e-3), torch.bfloat16: dict(atol=3e-2, rtol=2e-2),
       torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-5, rtol=1e-5)}

IMPLS = {
    "dense": dense_attention,
    "looped": looped_attention,
    "unfold": unfold_attention,
    "hybrid(blocked)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="blocked"),
    "hybrid(auto)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="auto"),
    "blocked(block_size=4)": lambda *a, **kw: blocked_hybrid_attention(*a, **kw, block_size=4),
    "sparse(hybrid)": lambda *a, **kw: sparse_attention(*a, **kw, impl="hybrid"),
}


def problem(dtype, device, std=1.0, B=2, H=2, T=24, Dh=16, seed=0):
    """q, k, v in ``dtype`` (q, k times ``std``), globals and tail padding that differ per batch."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, Dh, generator=g) * std for _ in range(2))
    v = torch.randn(B, H, T, Dh, generator=g)
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [0, 17]] = True
    gm[1 % B, 5] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[B - 1, T - 6:] = True
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)] + [gm.to(device), kpm.to(device)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_large_logits_low_precision(impl, dtype, causal, device):
    q, k, v, gm, kpm = problem(dtype, device, std=55.0)                    # logits ~ 3e3
    scores = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    assert 1e3 < scores.abs().max() < 1e5 and scores.abs().median() > 1e2   # the setup really is extreme
    out = IMPLS[impl](q, k, v, 3, gm, kpm, causal=causal)
    assert out.dtype == dtype and out.device.type == device and out.shape == q.shape
    assert torch.isfinite(out).all(), f"{impl} {dtype}: non-finite output"
    # same rounded inputs, computed in float32 / float64
    ref32 = dense_attention(q.float(), k.float(), v.float(), 3, gm, kpm, causal=causal)
    ref64, _ = reference_attention(q.cpu(), k.cpu(), v.cpu(),
                                   brute_allowed_tensor(q.shape[2], 3, gm.cpu(), kpm.cpu(), causal))
    torch.testing.assert_close(out.float(), ref32, **TOL[dtype])
    torch.testing.assert_close(out.double().cpu(), ref64, **TOL[dtype])
    assert torch.equal(out.transpose(1, 2)[kpm], torch.zeros_like(out.transpose(1, 2)[kpm]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_large_logits_float32(impl, device):
    q, k, v, gm, kpm = problem(torch.float32, device, std=100.0)           # logits ~ 1e4
    out = IMPLS[impl](q, k, v, 2, gm, kpm)
    assert torch.isfinite(out).all()
    ref64, _ = reference_attention(q.cpu(), k.cpu(), v.cpu(), brute_allowed_tensor(q.shape[2], 2, gm.cpu(), kpm.cpu()))
    torch.testing.assert_close(out.double().cpu(), ref64, **TOL[torch.float32])


def empty_row_scenarios(device):
    """(name, global_mask, key_padding_mask, causal) with rows that have no allowed key."""
    T = 10
    full = torch.ones(2, T, dtype=torch.bool)
    lead = torch.zeros(2, T, dtype=torch.bool)
    lead[:, :4] = True                                   # causal: rows 0-3 padded, row 4 reads only itself
    some = torch.zeros(2, T, dtype=torch.bool)
    some[0] = True                                       # sequence 0 fully padded, sequence 1 not at all
    gm = torch.zeros(2, T, dtype=torch.bool)
    gm[:, [0, 2]] = True                                 # global tokens that are padding
    out = [("all padded", None, full, False), ("all padded causal", gm, full, True),
           ("leading padding causal", gm, lead, True), ("one sequence padded", gm, some, False),
           ("one sequence padded causal", None, some, True)]
    return [(n, None if g is None else g.to(device), p.to(device), c) for n, g, p, c in out]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL, ids=str)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_empty_rows_are_exact_zeros(impl, dtype, device):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 10, 4, generator=g).to(device=device, dtype=dtype) * 30 for _ in range(3))
    for name, gm, kpm, causal in empty_row_scenarios(device):
        for window in (0, 2, 20):
            out, w = IMPLS[impl](q, k, v, window, gm, kpm, causal=causal, return_weights=True)
            assert out.dtype == dtype, (name, out.dtype)
            assert not torch.isnan(out).any() and not torch.isnan(w).any(), f"{name}, w={window}: NaN"
            allowed = brute_allowed_tensor(10, window, None if gm is None else gm.cpu(), kpm.cpu(), causal)
            empty = ~allowed.any(-1).to(device)                              # (B, T)
            assert empty.any()
            rows = out.transpose(1, 2)[empty]                                # (n, H, Dh)
            assert torch.equal(rows, torch.zeros_like(rows)), f"{name}, w={window}: empty rows not exactly 0"
            w_rows = w.transpose(1, 2)[empty]
            assert torch.equal(w_rows, torch.zeros_like(w_rows)), f"{name}, w={window}: weights of empty rows"


@pytest.mark.parametrize("impl", list(IMPLS))
def test_float64_works(impl):
    q, k, v, gm, kpm = problem(torch.float64, "cpu")
    out = IMPLS[impl](q, k, v, 3, gm, kpm, causal=True)
    assert out.dtype == torch.float64
    ref64, _ = reference_attention(q, k, v, brute_allowed_tensor(q.shape[2], 3, gm, kpm, True))
    torch.testing.assert_close(out, ref64, **TOL[torch.float64])


@pytest.mark.parametrize("impl", list(IMPLS))
def test_float64_is_computed_in_float64(impl):
    """float64 inputs are the gradcheck dtype: downcasting them to float32 inside would break it."""
    q, k, v, gm, kpm = problem(torch.float64, "cpu", std=3.0)
    out = IMPLS[impl](q, k, v, 3, gm, kpm)
    ref64, _ = reference_attention(q, k, v, brute_allowed_tensor(q.shape[2], 3, gm, kpm))
    torch.testing.assert_close(out, ref64, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_weights_are_float_probabilities(dtype):
    """return_weights in fp16/bf16: rows of allowed weights still sum to 1 (statistics in float32)."""
    q, k, v, gm, kpm = problem(dtype, "cpu", std=55.0)
    for impl in ("dense", "unfold", "hybrid(blocked)"):
        _, w = IMPLS[impl](q, k, v, 3, gm, kpm, return_weights=True)
        sums = w.double().sum(-1)                                            # (B, H, T)
        want = (~kpm)[:, None, :].expand_as(sums).double()
        torch.testing.assert_close(sums, want, atol=1e-3, rtol=0)
