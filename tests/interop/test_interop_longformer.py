"""Our layer inside a randomly initialised transformers LongformerModel (the `peers` extra; nothing is
downloaded): the same hidden states as Longformer's own attention in float32 (padding, several global
tokens per sequence, T not a multiple of the window, per-layer windows), and the swapped model trains."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import HybridSparseAttention
from tutor.conventions import longformer_layer_inputs
from tutor.interop import LongformerSelfAttentionSwap, count_swapped, swap_longformer_attention

transformers = pytest.importorskip("transformers")
from transformers import LongformerConfig, LongformerForSequenceClassification, LongformerModel   # noqa: E402
from transformers.utils import logging as hf_logging                        # noqa: E402

hf_logging.set_verbosity_error()                                           # "padded to a multiple of ..." notes
pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = [dict(impl="hybrid", backend="blocked"), dict(impl="hybrid", backend="auto"), dict(impl="dense"),
            dict(impl="unfold")]


def small_config(**kw):
    base = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                attention_window=[4, 8], max_position_embeddings=80, pad_token_id=1,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return LongformerConfig(**{**base, **kw})


def batch(T, seed=0):
    """3 sequences: globals at 3 / 2 / 0 places, the 2nd padded after 9 tokens (globals there ignored)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (3, T), generator=g)
    attention_mask = torch.ones(3, T, dtype=torch.long)
    attention_mask[1, 9:] = 0
    ids[1, 9:] = 1
    glob = torch.zeros(3, T, dtype=torch.long)
    glob[0, [0, 5, T - 1]] = 1
    glob[1, [0, 3]] = 1
    return ids, attention_mask, glob


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    return LongformerModel(small_config()).eval()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(s.values()))
@pytest.mark.parametrize("T", [13, 16, 21])
def test_swapped_model_gives_the_same_hidden_states(hf_model, setting, T):
    ours = swap_longformer_attention(copy.deepcopy(hf_model), **setting)
    assert count_swapped(ours) == 2 and count_swapped(hf_model) == 0
    ids, attention_mask, glob = batch(T)
    with torch.no_grad():
        want = hf_model(ids, attention_mask=attention_mask, global_attention_mask=glob).last_hidden_state
        got = ours(ids, attention_mask=attention_mask, global_attention_mask=glob).last_hidden_state
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_no_global_tokens_and_no_masks(hf_model):
    ours = swap_longformer_attention(copy.deepcopy(hf_model))
    ids, _, _ = batch(10, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf_model(ids).last_hidden_state, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("n_global", [0, 1, 5, 16])
def test_one_layer_against_longformer_self_attention(hf_model, n_global):
    """from_longformer at the layer level, on the masks LongformerModel hands its layers."""
    hf_attn = hf_model.encoder.layer[1].attention.self                      # attention_window 8 -> w = 4
    layer = HybridSparseAttention.from_longformer(hf_attn)
    assert layer.window == 4 and isinstance(layer.out_proj, nn.Identity) and layer.global_projections
    B, T = 2, 16
    x = torch.randn(B, T, 32, generator=torch.Generator().manual_seed(n_global))
    glob = torch.zeros(B, T, dtype=torch.bool)
    glob[0, torch.randperm(T, generator=torch.Generator().manual_seed(1))[:n_global]] = True
    glob[1, : n_global // 2] = True
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 12:] = True
    with torch.no_grad():
        want = hf_attn(x, **longformer_layer_inputs(glob, pad))[0]
        got = layer(x, global_mask=glob, key_padding_mask=pad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(2, 4), n=st.integers(1, 3), data=st.data())
def test_layer_equals_longformer_on_random_shapes_and_masks(w, n, data):
    """Any window, global tokens anywhere (none to all), tail padding (none to all but one)."""
    torch.manual_seed(w * 10 + n)
    hf_attn = LongformerModel(small_config(attention_window=2 * w, num_hidden_layers=1)).encoder.layer[0].attention.self
    layer = HybridSparseAttention.from_longformer(hf_attn)
    B, T = 2, 2 * w * n
    glob = torch.tensor([data.draw(st.lists(st.booleans(), min_size=T, max_size=T)) for _ in range(B)])
    pad = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        pad[b, T - data.draw(st.integers(0, T - 1)):] = True
    x = torch.randn(B, T, 32)
    with torch.no_grad():
        want = hf_attn(x, **longformer_layer_inputs(glob, pad))[0]
        got = layer(x, global_mask=glob, key_padding_mask=pad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_swapped_model_trains():
    """Gradients reach every parameter of our layers, and the loss falls on a tiny task."""
    torch.manual_seed(0)
    model = LongformerForSequenceClassification(small_config(num_labels=2))
    swap_longformer_attention(model, backend="blocked")
    ids, attention_mask, glob = batch(12, seed=3)
    ids = torch.cat([ids, ids.flip(1)])                                    # 6 sequences to memorise
    attention_mask, glob = torch.cat([attention_mask, attention_mask]), torch.cat([glob, glob])
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss = model(ids, attention_mask=attention_mask, global_attention_mask=glob, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        if step == 0:
            swapped = [m for m in model.modules() if isinstance(m, LongformerSelfAttentionSwap)]
            for name, p in (kv for m in swapped for kv in m.named_parameters()):
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_errors(hf_model):
    with pytest.raises(ValueError, match="no LongformerSelfAttention"):
        swap_longformer_attention(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="nn.Module"):
        swap_longformer_attention("model")
    ours = swap_longformer_attention(copy.deepcopy(hf_model))
    ids, attention_mask, glob = batch(8)
    with pytest.raises(ValueError, match="output_attentions"):
        ours(ids, attention_mask=attention_mask, output_attentions=True)


def test_without_transformers_the_swap_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.models.longformer.modeling_longformer", None)
    with pytest.raises(ImportError, match="peers"):
        swap_longformer_attention(nn.Linear(2, 2))
