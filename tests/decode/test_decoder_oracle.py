"""The decoder through its caches against recomputing the whole prefix (oracles a and c).

(a) Greedy generation through the caches (a ring per local layer, a growing cache per global
layer) equals recomputing full causal attention over the whole prefix with each layer's
(sinks + window) mask, at every step of a long generation, on the same token stream: float32,
logits and every layer's output within 1e-5. Because the recompute is causal, one forward over the
final stream recomputes every prefix at once (its row ``t`` depends on tokens ``0 .. t`` only);
a few steps are also recomputed from their prefix alone.

(c) The negative lessons: a ring cache is exact only when every layer was windowed from the start.
Evicting keys that were computed with full attention, or re-encoding only the last ``w`` tokens,
gives other numbers.
"""
from __future__ import annotations

import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.decode import DecoderConfig, GrowingKVCache, RingKVCache, TinyDecoder, layer_pattern

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5


def model_for(seed=0, **config) -> TinyDecoder:
    torch.manual_seed(seed)
    return TinyDecoder(DecoderConfig(**config)).eval()


def prompt(B=2, P=6, vocab=64, seed=0):
    return torch.randint(0, vocab, (B, P), generator=torch.Generator().manual_seed(seed))


def assert_same_stream(model, tokens, logits, P, greedy=True):
    """Recompute the whole stream once: its logits are the cache's (and greedy picked their argmax)."""
    with torch.no_grad():
        ref = model(tokens[:, :-1])                                       # (B, T - 1, V)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
    if not greedy:
        return
    top2 = ref[:, P - 1:].topk(2, dim=-1).values                          # (B, steps, 2)
    clear = (top2[..., 0] - top2[..., 1]) > 1e-4                          # not a near-tie
    assert torch.equal(tokens[:, P:][clear], ref[:, P - 1:].argmax(-1)[clear])


# --------------------------------------------------------------------------- oracle (a)
@pytest.mark.slow
def test_a_thousand_steps_through_the_rings_equal_the_masked_recompute():
    """Window 4 in every layer from the start, 2 sink tokens, sink logits: 250 windows deep."""
    model = model_for(windows=(4, 4, 4), sinks=2, sink_logits=True, n_heads=4, n_kv_heads=2)
    caches = model.new_caches()
    assert all(isinstance(c, RingKVCache) for c in caches)
    sampler = torch.Generator().manual_seed(0)                            # a varied stream, reproducible
    tokens, logits = model.generate(prompt(), 1000, caches, generator=sampler)
    assert tokens.shape == (2, 1006) and logits.shape == (2, 1005, 64)
    assert_same_stream(model, tokens, logits, P=6, greedy=False)
    assert all(c.keys.shape[2] == 2 + 4 + 1 for c in caches)             # never T-sized
    assert len(set(tokens[0, 6:].tolist())) > 32                          # a real stream, not one token


@pytest.mark.slow
def test_every_layer_output_equals_the_recompute_at_every_step():
    """1000 steps, window 3 in both layers, one sink token, one K/V head for four query heads."""
    model = model_for(seed=1, windows=(3, 3), sinks=1, n_heads=4, n_kv_heads=1)
    tokens, _ = model.generate(prompt(B=1, P=4, seed=1), 1000, generator=torch.Generator().manual_seed(1))
    caches, steps = model.new_caches(), []
    with torch.no_grad():
        _, ref_hidden = model(tokens, return_hidden=True)                # each (1, T, dim)
        for t in range(tokens.shape[1]):                                  # one token at a time
            logits, hidden = model(tokens[:, t:t + 1], caches, return_hidden=True)
            steps.append(hidden)
            if t % 97 == 0:                                               # the prefix alone, truly recomputed
                torch.testing.assert_close(model(tokens[:, :t + 1])[:, -1], logits[:, 0], atol=ATOL, rtol=0)
    for layer, ref in enumerate(ref_hidden):
        ours = torch.cat([h[layer] for h in steps], dim=1)                # (1, T, dim)
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0, msg=lambda m: f"layer {layer}: {m}")


@pytest.mark.parametrize("windows", [layer_pattern(6, 5), layer_pattern(4, 3, local_per_global=1)])
def test_interleaved_local_and_global_layers(windows):
    """Gemma's 5 : 1 and gpt-oss's 1 : 1: rings in local layers, growing caches in global ones."""
    model = model_for(seed=2, windows=windows, sinks=1, sink_logits=True)
    caches = model.new_caches()
    kinds = [GrowingKVCache if w is None else RingKVCache for w in windows]
    assert [type(c) for c in caches] == kinds
    tokens, logits = model.generate(prompt(seed=2), 120, caches, prefill_chunk=5)
    assert_same_stream(model, tokens, logits, P=6)                        # greedy: argmax agrees too


def test_layer_pattern():
    assert layer_pattern(6, 512) == (512, 512, 512, 512, 512, None)
    assert layer_pattern(4, 8, local_per_global=1) == (8, None, 8, None)
    assert layer_pattern(3, 8, local_per_global=None) == (8, 8, 8)


@pytest.mark.parametrize("chunks", [[40], [1] * 40, [3, 17, 1, 19], [13, 27]])
def test_chunked_prefill_equals_one_chunk(chunks):
    model = model_for(seed=3, windows=(5, None, 5), sinks=2)
    tokens = prompt(P=40, seed=3)
    with torch.no_grad():
        one = model(tokens, model.new_caches())
        caches = model.new_caches()
        parts = [model(part, caches) for part in tokens.split(chunks, dim=1)]
        torch.testing.assert_close(torch.cat(parts, dim=1), one, atol=ATOL, rtol=0)
        nxt = one[:, -1:].argmax(-1)                                      # and decoding goes on equally
        torch.testing.assert_close(model(nxt, caches)[:, 0],
                                   model(torch.cat([tokens, nxt], 1))[:, -1], atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- StreamingLLM's positions
def test_in_cache_positions_equal_absolute_until_the_first_eviction():
    window, sinks = 6, 2
    absolute = model_for(seed=4, windows=(window, window), sinks=sinks)
    in_cache = absolute.with_config(positions="in_cache")
    tokens, logits = absolute.generate(prompt(seed=4), 40, generator=torch.Generator().manual_seed(4))
    caches = in_cache.new_caches()
    with torch.no_grad():
        theirs = torch.cat([in_cache(tokens[:, t:t + 1], caches) for t in range(tokens.shape[1] - 1)], 1)
        torch.testing.assert_close(in_cache(tokens[:, :-1]), logits, atol=ATOL, rtol=0)  # nothing evicted
    first_eviction = sinks + window + 1                                   # writing it evicts position `sinks`
    torch.testing.assert_close(theirs[:, :first_eviction], logits[:, :first_eviction], atol=ATOL, rtol=0)
    assert (theirs[:, first_eviction:] - logits[:, first_eviction:]).abs().amax() > 1e-3


# --------------------------------------------------------------------------- negative lessons (c)
def test_evicting_a_full_attention_prefill_is_not_the_windowed_model():
    """Keys cached after a full-attention prefill carry the whole prefix: evicting them to the window
    does not give what the windowed model computes (its keys only ever saw windows)."""
    window, P = 4, 40
    model = model_for(seed=5, windows=(window,) * 3)
    full = model.with_config(windows=(None,) * 3)                         # same weights, full attention
    tokens = prompt(P=P, seed=5)
    with torch.no_grad():
        full_caches = full.new_caches()
        full(tokens[:, :-1], full_caches)                                 # a full-attention prefill ...
        rings = model.new_caches()
        for ring, grown in zip(rings, full_caches):                       # ... evicted to the rings
            ring.update(grown.view().keys, grown.view().values)
        windowed = model.new_caches()
        model(tokens[:, :-1], windowed)                                   # the windowed prefill (control)
        # layer 0's keys come from the embeddings alone and agree; the difference enters at layer 1
        torch.testing.assert_close(rings[0].keys, windowed[0].keys, atol=ATOL, rtol=0)
        assert (rings[1].keys - windowed[1].keys).abs().amax() > 1e-2
        stream, after_full = model.generate(tokens[:, -1:], 30, rings)   # continue from the caches
        control, after_windowed = model.generate(tokens[:, -1:], 30, windowed)
        masked_recompute = model(torch.cat([tokens[:, :-1], stream[:, :-1]], 1))[:, P - 1:]
        control_recompute = model(torch.cat([tokens[:, :-1], control[:, :-1]], 1))[:, P - 1:]
    torch.testing.assert_close(after_windowed, control_recompute, atol=ATOL, rtol=0)  # the control
    gap = (after_full - masked_recompute).abs().amax()
    assert gap > 1e-2, f"eviction after a full prefill should differ, max gap {gap:.2e}"


def test_a_global_layer_below_makes_the_window_no_truncation():
    """With a full layer below, a local layer's keys depend on the whole prefix: the mixed model is
    exact through its caches, but it is not the all-local model with the same weights."""
    model = model_for(seed=6, windows=(4, None, 4))
    tokens, logits = model.generate(prompt(seed=6), 60, generator=torch.Generator().manual_seed(6))
    assert_same_stream(model, tokens, logits, P=6, greedy=False)
    all_local = model.with_config(windows=(4, 4, 4))
    assert (all_local(tokens[:, :-1]) - logits)[:, 12:].abs().amax() > 1e-2


def test_re_encoding_the_last_w_tokens_is_not_the_window():
    """The receptive field grows by w per layer: the last w + 1 tokens (at their own positions)
    reproduce one layer, the last L * w + 1 reproduce L layers, one token fewer does not."""
    window, L, t = 4, 3, 50
    model = model_for(seed=7, windows=(window,) * L)
    tokens, logits = model.generate(prompt(B=1, seed=7), t, generator=torch.Generator().manual_seed(7))
    want = logits[:, t]                                                   # the step at position t

    def re_encode(n):                                                     # the last n tokens up to t
        pos = torch.arange(t - n + 1, t + 1)
        with torch.no_grad():
            return model(tokens[:, pos], positions=pos)[:, -1]

    assert (re_encode(window + 1) - want).abs().amax() > 1e-2
    assert (re_encode(L * window) - want).abs().amax() > 1e-4
    torch.testing.assert_close(re_encode(L * window + 1), want, atol=ATOL, rtol=0)
    one_layer = model_for(seed=7, windows=(window,))
    toks1, logits1 = one_layer.generate(prompt(B=1, seed=7), t, generator=torch.Generator().manual_seed(7))
    pos = torch.arange(t - window, t + 1)
    torch.testing.assert_close(one_layer(toks1[:, pos], positions=pos)[:, -1], logits1[:, t],
                               atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- bad input
def test_decoder_bad_input_names_the_argument():
    model = model_for(windows=(3, None), sinks=1)
    with pytest.raises(ValueError, match=r"^caches must be a list of 2 caches"):
        model(prompt(), model.new_caches()[:1])
    with pytest.raises(ValueError, match=r"^caches\[0\] must be layer 0's cache \(window, sinks\) = \(3, 1\)"):
        model(prompt(), [RingKVCache(4, sinks=1), GrowingKVCache()])
    with pytest.raises(ValueError, match=r"^caches\[1\] must be layer 1's cache"):
        model(prompt(), [RingKVCache(3, sinks=1), RingKVCache(3, sinks=1)])
    with pytest.raises(ValueError, match=r"^tokens must be a \(B, C\) integer tensor"):
        model(prompt().float())
    with pytest.raises(ValueError, match=r"^positions must be \(C,\) = \(6,\) increasing"):
        model(prompt(), positions=torch.tensor([0, 1, 2, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"^new_tokens must be >= 1"):
        model.generate(prompt(), 0)
    for kwargs, error, match in [({"windows": (-1,)}, ValueError, "window"),
                                 ({"windows": (2.5,)}, TypeError, "window"),
                                 ({"sinks": -2}, ValueError, "sinks"),
                                 ({"n_heads": 4, "n_kv_heads": 3}, ValueError, "n_kv_heads"),
                                 ({"positions": "relative"}, ValueError, "positions")]:
        with pytest.raises(error, match=match):
            DecoderConfig(**kwargs)
