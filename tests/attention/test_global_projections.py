"""HybridSparseAttention's Longformer-style global projections, its backend option, and torch.jit.trace
(no transformers needed: the reference is written out here with the dense mask)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import HybridSparseAttention
from tutor.masks import hybrid_mask

pytestmark = pytest.mark.usefixtures("single_thread")

B, T, DIM, HEADS, W = 2, 13, 12, 3, 2


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, DIM, generator=g)
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [0, 6, 12]] = True
    gm[1, [1, 10]] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, 9:] = True                                  # covers the global token 10 of sequence 1
    return x, gm, kpm


def reference(layer, x, gm, kpm, causal=False):
    """Dense: local rows read their allowed keys through q/k/v_proj, global rows every key through *_global."""
    Bx, Tx, _ = x.shape
    Dh = DIM // HEADS

    def heads(t):
        return t.reshape(Bx, Tx, HEADS, Dh).permute(0, 2, 1, 3)           # (B, H, T, Dh)

    allowed = hybrid_mask(Tx, W, gm, kpm, causal=causal)[:, None]         # (B, 1, T, T)
    out = []
    for proj in (("q_proj", "k_proj", "v_proj"), ("q_global", "k_global", "v_global")):
        q, k, v = (heads(getattr(layer, name)(x)).double() for name in proj)
        s = (q @ k.transpose(-1, -2) / Dh ** 0.5).masked_fill(~allowed, float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
        out.append(p @ v)                                                  # (B, H, T, Dh)
    is_global = (gm & ~kpm)[:, None, :, None]                              # (B, 1, T, 1)
    o = torch.where(is_global, out[1], out[0]).float()
    y = layer.out_proj(o.permute(0, 2, 1, 3).reshape(Bx, Tx, DIM))
    return y.masked_fill(kpm[..., None], 0.0)


@pytest.mark.parametrize("impl, backend", [("dense", "auto"), ("unfold", "auto"), ("hybrid", "blocked"),
                                           ("hybrid", "auto")])
@pytest.mark.parametrize("causal", [False, True])
def test_global_rows_use_their_own_projections(impl, backend, causal):
    torch.manual_seed(0)
    layer = HybridSparseAttention(DIM, HEADS, W, impl=impl, backend=backend, causal=causal,
                                  global_projections=True)
    x, gm, kpm = inputs()
    torch.testing.assert_close(layer(x, gm, kpm), reference(layer, x, gm, kpm, causal), atol=1e-5, rtol=1e-4)


def test_same_weights_give_the_plain_layer_and_no_global_token_ignores_them():
    torch.manual_seed(0)
    plain = HybridSparseAttention(DIM, HEADS, W)
    both = HybridSparseAttention(DIM, HEADS, W, global_projections=True)
    both.load_state_dict({**plain.state_dict(), **{f"{g}.{p}": plain.state_dict()[f"{l}.{p}"]
                                                   for g, l in (("q_global", "q_proj"), ("k_global", "k_proj"),
                                                                ("v_global", "v_proj")) for p in ("weight", "bias")}})
    x, gm, kpm = inputs()
    torch.testing.assert_close(both(x, gm, kpm), plain(x, gm, kpm), atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        both.q_global.weight.mul_(3.0)
    torch.testing.assert_close(both(x, None, kpm), plain(x, None, kpm))
    torch.testing.assert_close(both(x, torch.zeros_like(gm), kpm), plain(x, None, kpm))
    assert not torch.allclose(both(x, gm, kpm), plain(x, gm, kpm))


def test_weights_rows_of_global_tokens_and_gradients():
    torch.manual_seed(0)
    layer = HybridSparseAttention(DIM, HEADS, W, impl="dense", global_projections=True)
    x, gm, kpm = inputs()
    y, w = layer(x, gm, kpm, return_weights=True)
    torch.testing.assert_close(w.sum(-1)[:, :, 0], torch.ones(B, HEADS))  # a global row sums to 1 over all keys
    assert (w[1, :, :, 9:] == 0).all()                                      # padded keys never read
    assert (w[0, :, 0] > 0).all()                                           # global row 0 reads every key
    y.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_and_repr():
    layer = HybridSparseAttention(DIM, HEADS, W, global_projections=True, backend="blocked")
    assert sum(p.numel() for p in layer.parameters()) == 7 * (DIM * DIM + DIM)
    assert "global_projections=True" in repr(layer) and "backend='blocked'" in repr(layer)
    assert all(type(getattr(layer, n)) is nn.Linear for n in ("q_global", "k_global", "v_global"))


def test_bad_backend_and_from_longformer_input():
    with pytest.raises(ValueError, match="backend"):
        HybridSparseAttention(DIM, HEADS, W, backend="cuda")
    with pytest.raises(ValueError, match="impl='hybrid'"):
        HybridSparseAttention(DIM, HEADS, W, impl="dense", backend="blocked")
    with pytest.raises(TypeError, match="LongformerSelfAttention"):
        HybridSparseAttention.from_longformer(nn.Linear(4, 4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_jit_trace_raises_a_clear_error():
    layer = HybridSparseAttention(DIM, HEADS, W)
    x, gm, kpm = inputs()
    with pytest.raises(RuntimeError, match="torch.jit.trace"):
        torch.jit.trace(layer, (x,))
