"""HybridSparseAttention: projections, heads, masks, dropout, causality, gradients, training."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import HybridSparseAttention, dense_attention
from tutor.masks import hybrid_mask

pytestmark = pytest.mark.usefixtures("single_thread")

IMPLS = ["dense", "looped", "unfold", "hybrid"]
B, T, DIM, HEADS, W = 2, 11, 12, 3, 2


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, DIM, generator=g)
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [0, 6]] = True
    gm[1, 9] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, 8:] = True                                  # covers the global token 9 of sequence 1
    return x, gm, kpm


def make(impl="hybrid", seed=0, **kw):
    torch.manual_seed(seed)
    return HybridSparseAttention(DIM, HEADS, W, impl=impl, **kw)


def manual(layer: HybridSparseAttention, x, gm=None, kpm=None, causal=False):
    """The layer written out by hand: project, split heads, dense attention, merge, project."""
    Bx, Tx, _ = x.shape
    Dh = DIM // HEADS

    def heads(t):
        return t.reshape(Bx, Tx, HEADS, Dh).permute(0, 2, 1, 3)           # (B, H, T, Dh)

    q, k, v = heads(layer.q_proj(x)), heads(layer.k_proj(x)), heads(layer.v_proj(x))
    out, w = dense_attention(q, k, v, W, gm, kpm, causal=causal, return_weights=True)
    y = layer.out_proj(out.permute(0, 2, 1, 3).reshape(Bx, Tx, DIM))      # (B, T, dim)
    if kpm is not None:
        y = y.masked_fill(kpm[..., None], 0.0)
    return y, w


@pytest.mark.parametrize("bias", [True, False])
def test_projections_are_linear(bias):
    layer = make(bias=bias)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        lin = getattr(layer, name)
        assert type(lin) is nn.Linear, name
        assert (lin.in_features, lin.out_features) == (DIM, DIM), name
        assert (lin.bias is not None) == bias, name
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == 4 * DIM * DIM + (4 * DIM if bias else 0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_manual_computation(impl, causal):
    x, gm, kpm = inputs()
    layer = make(impl, causal=causal).eval()
    y = layer(x, gm, kpm)
    assert y.shape == (B, T, DIM) and y.dtype == x.dtype
    want, _ = manual(layer, x, gm, kpm, causal)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_every_impl_same_output_same_weights(causal):
    x, gm, kpm = inputs(1)
    ref = make("hybrid", seed=3, causal=causal).eval()
    ys = {}
    for impl in IMPLS:
        layer = make(impl, seed=99, causal=causal).eval()
        layer.load_state_dict(ref.state_dict())
        ys[impl] = layer(x, gm, kpm)
        ys[impl + " (no masks)"] = layer(x)
    for impl in IMPLS:
        torch.testing.assert_close(ys[impl], ys["hybrid"], atol=1e-5, rtol=1e-5, msg=lambda m: f"{impl}: {m}")
        torch.testing.assert_close(ys[impl + " (no masks)"], ys["hybrid (no masks)"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_padded_positions_are_exact_zeros(impl):
    x, gm, kpm = inputs()
    for training in (False, True):
        layer = make(impl, bias=True, dropout=0.0 if impl == "looped" else 0.3).train(training)
        y = layer(x, gm, kpm)
        assert torch.equal(y[kpm], torch.zeros_like(y[kpm])), f"{impl}, training={training}"
        assert torch.isfinite(y).all() and (y[~kpm] != 0).any()
    full = torch.ones(B, T, dtype=torch.bool)                               # everything padded
    y = make(impl).eval()(x, gm, full)
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("impl", ["dense", "unfold", "hybrid"])
def test_dropout_only_in_training(impl):
    x, gm, kpm = inputs()
    layer = make(impl, dropout=0.5)
    plain = make(impl, dropout=0.0)
    plain.load_state_dict(layer.state_dict())

    layer.eval()
    torch.manual_seed(1)
    y1 = layer(x, gm, kpm)
    torch.manual_seed(2)
    y2 = layer(x, gm, kpm)
    assert torch.equal(y1, y2), "eval must be deterministic"
    torch.testing.assert_close(y1, plain.eval()(x, gm, kpm), atol=1e-6, rtol=1e-6)

    layer.train()
    torch.manual_seed(1)
    t1 = layer(x, gm, kpm)
    torch.manual_seed(2)
    t2 = layer(x, gm, kpm)
    assert torch.isfinite(t1).all() and torch.isfinite(t2).all()
    assert not torch.allclose(t1[~kpm], y1[~kpm], atol=1e-3), "dropout did nothing in training"
    assert not torch.allclose(t1, t2), "two training passes with different seeds agree"

    # inverted dropout on the attention probabilities: its average over many draws is the eval output
    torch.manual_seed(0)                                  # 100 independent draws as one batch
    n = 100
    many = layer(x.repeat(n, 1, 1), gm.repeat(n, 1), kpm.repeat(n, 1))     # (n*B, T, dim)
    torch.testing.assert_close(many.view(n, B, T, DIM).mean(0), y1, atol=0.1, rtol=0)

    plain.train()                                                           # dropout=0: train == eval
    torch.testing.assert_close(plain(x, gm, kpm), plain.eval()(x, gm, kpm), atol=0, rtol=0)


def test_looped_refuses_dropout():
    with pytest.raises(ValueError, match="dropout"):
        HybridSparseAttention(DIM, HEADS, W, impl="looped", dropout=0.1)


@pytest.mark.parametrize("impl", IMPLS)
def test_return_weights(impl):
    x, gm, kpm = inputs()
    layer = make(impl).eval()
    y, w = layer(x, gm, kpm, return_weights=True)
    torch.testing.assert_close(y, layer(x, gm, kpm), atol=1e-6, rtol=1e-6)
    assert w.shape == (B, HEADS, T, T)
    allowed = hybrid_mask(T, W, gm, kpm)[:, None].expand(B, HEADS, T, T)
    assert torch.equal(w[~allowed], torch.zeros_like(w[~allowed]))
    sums = w.sum(-1)                                                        # (B, H, T)
    torch.testing.assert_close(sums, (~kpm)[:, None].expand_as(sums).float(), atol=1e-5, rtol=0)
    _, want = manual(layer, x, gm, kpm)
    torch.testing.assert_close(w.float(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_causal_flag(impl):
    """causal=True: changing tokens after position t never changes outputs up to t."""
    x, gm, _ = inputs()
    t = 5
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn(B, T - t - 1, DIM)
    causal = make(impl, causal=True).eval()
    assert causal.causal is True
    torch.testing.assert_close(causal(x, gm)[:, :t + 1], causal(x2, gm)[:, :t + 1], atol=1e-6, rtol=1e-6)
    bidirectional = make(impl, causal=False).eval()
    assert not torch.allclose(bidirectional(x, gm)[:, :t + 1], bidirectional(x2, gm)[:, :t + 1], atol=1e-3)


@pytest.mark.parametrize("impl", ["dense", "unfold", "hybrid"])
def test_gradient_reaches_every_projection(impl):
    x, gm, kpm = inputs()
    x.requires_grad_()
    layer = make(impl, dropout=0.1).train()
    layer(x, gm, kpm).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[kpm], torch.zeros_like(x.grad[kpm])), "padded tokens must not get gradient"


@pytest.mark.parametrize("impl", ["dense", "unfold", "hybrid"])
def test_training_step_in_sequential(impl):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, DIM), HybridSparseAttention(DIM, HEADS, W, impl=impl, dropout=0.1),
                          nn.LayerNorm(DIM), nn.Linear(DIM, 1))
    x = torch.randn(8, T, 4)
    target = x.cumsum(1)[..., :1] / 3                      # needs information from other tokens
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_layer_other_dtypes(dtype):
    x, gm, kpm = inputs()
    layer = make("hybrid").eval()
    want = layer(x, gm, kpm)
    layer = layer.to(dtype)
    y = layer(x.to(dtype), gm, kpm)
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), want, atol=5e-2 if dtype == torch.bfloat16 else 1e-5, rtol=5e-2)


def test_tiny_shapes():
    layer = make("hybrid").eval()
    y = layer(torch.randn(1, 1, DIM))
    assert y.shape == (1, 1, DIM) and torch.isfinite(y).all()
    layer0 = HybridSparseAttention(DIM, HEADS, 0).eval()                    # window 0, no globals
    assert layer0(torch.randn(3, 4, DIM)).shape == (3, 4, DIM)
