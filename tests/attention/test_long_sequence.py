"""hybrid_attention at T = 131072 on CPU: it runs (a T x T map would need 64 GiB) and is right.

``auto`` is what a learner gets (on CPU it may pick a compiled backend, whose first call
compiles); ``blocked`` is the pure-PyTorch path every device has.

Correctness is checked row by row: for a few query rows we list the allowed keys by hand (window
plus global tokens, or every key for a global row) and do a float64 softmax over just those keys.
Nothing of size T x T is ever built.
"""
from __future__ import annotations

import pytest
import torch

from strategies import reference_rows
from tutor.attention import hybrid_attention

T = 131072


def keys_of(i: int, window: int, globals_: list, pad_from: int, causal: bool) -> list:
    """Allowed keys of query i by docs/spec.md: window + global keys, or everything for a global row."""
    if i >= pad_from:
        return []
    if i in globals_:
        keys = set(range(T))
    else:
        keys = set(range(max(0, i - window), min(T, i + window + 1))) | set(globals_)
    return sorted(j for j in keys if j < pad_from and (not causal or j <= i))


@pytest.mark.slow
@pytest.mark.parametrize("backend, H, Dh, window, causal, pad",
                         [("auto", 2, 32, 64, False, 0), ("blocked", 1, 32, 128, True, 1000)],
                         ids=["auto-H2-Dh32-w64", "blocked-H1-Dh32-w128-causal-padded"])
def test_hybrid_at_131072(backend, H, Dh, window, causal, pad):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, T, Dh, generator=g) for _ in range(3))
    globals_ = [3, 70001]
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, globals_] = True
    pad_from = T - pad
    kpm = None
    if pad:
        kpm = torch.zeros(1, T, dtype=torch.bool)
        kpm[0, pad_from:] = True

    out = hybrid_attention(q, k, v, window, gm, kpm, causal=causal, backend=backend)
    assert out.shape == (1, H, T, Dh) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    w = window
    rows = sorted({0, 1, 2, 3, 4, w - 1, w, w + 1, w + 3, w + 4, 1000, 65536,
                   70001 - w - 1, 70001 - w, 70000, 70001, 70002, 70001 + w, 70001 + w + 1,
                   pad_from - 1, pad_from - w - 1, T - w - 1, T - 2, T - 1})
    for i in rows:
        want = reference_rows(q, k, v, 0, i, keys_of(i, window, globals_, pad_from, causal))  # (H, Dh)
        torch.testing.assert_close(out[0, :, i].double(), want, atol=1e-5, rtol=1e-5, msg=lambda m: f"row {i}: {m}")
        if i >= pad_from:
            assert torch.equal(out[0, :, i], torch.zeros_like(out[0, :, i])), f"padded row {i} not exactly 0"
