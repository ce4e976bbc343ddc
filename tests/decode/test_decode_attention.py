"""One decode step over the ring cache against the course's dense reference (oracle b).

Sinks ∪ window is the course's causal hybrid mask with the global tokens at 0 .. sinks-1, so a
token-by-token decode through :class:`RingKVCache` must equal ``tutor.attention.dense_attention``
row by row. Grouped K/V heads against keys repeated per head; learned sink logits against an
explicit softmax with one more column.
"""
from __future__ import annotations

import math

import pytest
import torch

from strategies import brute_allowed_tensor, single_thread  # noqa: F401 (fixture)
from tutor.attention import dense_attention
from tutor.decode import (GrowingKVCache, RingKVCache, allowed_by_position, decode_attention,
                          masked_attention, sink_window_mask, sinks_as_global_mask)
from tutor.masks import global_mask_at, hybrid_mask

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5


def qkv(B, H, Hkv, T, Dh, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, Dh, generator=g), torch.randn(B, Hkv, T, Dh, generator=g),
            torch.randn(B, Hkv, T, Dh, generator=g))


def decode_all(q, k, v, cache, sink_logits=None):
    """Feed k, v one position at a time; the query of each step reads the cache; (B, H, T, Dh)."""
    outs = []
    for t in range(q.shape[2]):
        cache.update(k[:, :, t:t + 1], v[:, :, t:t + 1])
        outs.append(decode_attention(q[:, :, t:t + 1], cache.view(), sink_logits=sink_logits))
    return torch.cat(outs, dim=2)


# --------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("T,window,sinks", [(1, 0, 0), (12, 0, 3), (20, 3, 2), (20, 5, 0), (9, 2, 9), (9, 20, 4)])
def test_sink_window_rule_is_the_causal_hybrid_mask_with_leading_globals(T, window, sinks):
    ours = sink_window_mask(T, window, sinks)                            # (1, T, T)
    globals_ = sinks_as_global_mask(T, sinks)                            # (1, T)
    assert torch.equal(ours, hybrid_mask(T, window, globals_, causal=True))          # whole matrix
    assert torch.equal(ours, brute_allowed_tensor(T, window, globals_, causal=True))  # plain loops
    pos = torch.arange(T)
    assert torch.equal(ours[0], allowed_by_position(pos, pos, window, sinks))
    assert torch.equal(sink_window_mask(T, None), hybrid_mask(T, T, causal=True))


def test_a_global_token_after_the_sinks_differs_only_in_its_row():
    """A global token at g >= sinks: its column is a key kept forever, its row still reads all of 0..g."""
    T, window, g = 16, 2, 9
    hybrid = hybrid_mask(T, window, global_mask_at(T, [g]), causal=True)[0]   # (T, T)
    pos = torch.arange(T)
    kept = allowed_by_position(pos, pos, window) | ((pos[None, :] == g) & (pos[None, :] <= pos[:, None]))
    differs = (hybrid != kept).nonzero()
    assert differs.numel() and set(differs[:, 0].tolist()) == {g}     # only row g
    assert hybrid[g, :g + 1].all() and not kept[g, :g - window].any()


# --------------------------------------------------------------------------- oracle (b)
@pytest.mark.parametrize("window,sinks", [(0, 0), (3, 0), (4, 2), (1, 5), (40, 3)])
def test_decoding_through_the_ring_equals_dense_masked_attention(window, sinks):
    B, H, T, Dh = 2, 3, 37, 8
    q, k, v = qkv(B, H, H, T, Dh)
    ours = decode_all(q, k, v, RingKVCache(window, sinks=sinks))
    ref = dense_attention(q, k, v, window, sinks_as_global_mask(T, sinks).expand(B, T), causal=True)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunks", [[37], [5, 12, 1, 19], [1] * 6 + [31]])
def test_prefill_chunks_read_their_own_keys_before_eviction(chunks):
    B, H, T, Dh, window, sinks = 1, 2, 37, 8, 4, 2
    q, k, v = qkv(B, H, H, T, Dh, seed=1)
    cache, outs, start = RingKVCache(window, sinks=sinks), [], 0
    for c in chunks:
        pos = torch.arange(start, start + c)
        sl = slice(start, start + c)
        view = cache.view().extended(k[:, :, sl], v[:, :, sl], pos)     # old keys + the chunk's own
        outs.append(decode_attention(q[:, :, sl], view, positions=pos))
        cache.update(k[:, :, sl], v[:, :, sl], pos)
        start += c
    ref = dense_attention(q, k, v, window, sinks_as_global_mask(T, sinks).expand(B, T), causal=True)
    torch.testing.assert_close(torch.cat(outs, dim=2), ref, atol=ATOL, rtol=0)


def test_full_layer_cache_equals_causal_attention():
    B, H, T, Dh = 1, 2, 30, 8
    q, k, v = qkv(B, H, H, T, Dh, seed=2)
    ours = decode_all(q, k, v, GrowingKVCache())
    torch.testing.assert_close(ours, dense_attention(q, k, v, T, causal=True), atol=ATOL, rtol=0)


@pytest.mark.parametrize("H,Hkv", [(6, 2), (4, 1), (4, 4)])
def test_grouped_kv_heads_equal_repeated_keys(H, Hkv):
    B, T, Dh, window, sinks = 2, 25, 8, 3, 1
    q, k, v = qkv(B, H, Hkv, T, Dh, seed=3)
    ours = decode_all(q, k, v, RingKVCache(window, sinks=sinks))
    group = H // Hkv                                                     # query head h reads kv head h // group
    kr, vr = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, T, Dh)
    ref = dense_attention(q, kr, vr, window, sinks_as_global_mask(T, sinks).expand(B, T), causal=True)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_sink_logits_are_one_more_softmax_column_with_no_value():
    B, H, Hkv, T, Dh, window, sinks = 2, 4, 2, 21, 8, 3, 2
    q, k, v = qkv(B, H, Hkv, T, Dh, seed=4)
    s_aux = torch.tensor([-1.0, 0.0, 2.0, 5.0])                          # (H,): learned, per head
    ours = decode_all(q, k, v, RingKVCache(window, sinks=sinks), sink_logits=s_aux)
    kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)  # (B, H, T, Dh)
    scores = q @ kr.transpose(-1, -2) / math.sqrt(Dh)                    # (B, H, T, T)
    scores = scores.masked_fill(~sink_window_mask(T, window, sinks)[:, None], float("-inf"))
    extra = s_aux.reshape(1, H, 1, 1).expand(B, H, T, 1)                 # (B, H, T, 1)
    probs = torch.softmax(torch.cat([scores, extra], dim=-1), dim=-1)    # (B, H, T, T + 1)
    ref = probs[..., :T] @ vr                                            # the sink column has no value
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    weights_sum = probs[..., :T].sum(-1)                                 # < 1: a head may attend "nowhere"
    assert (weights_sum < 1).all() and (weights_sum[:, 3] < 0.5).all()
    no_sink = decode_all(q, k, v, RingKVCache(window, sinks=sinks))
    assert (ours - no_sink).abs().max() > 1e-2


def test_masked_attention_rows_with_nothing_allowed_are_zero():
    q, k, v = qkv(1, 2, 2, 3, 4)
    allowed = torch.zeros(3, 3, dtype=torch.bool)
    assert (masked_attention(q, k, v, allowed) == 0).all()


@pytest.mark.parametrize("sink_logits", [None, torch.tensor([0.5, -1.0, 2.0, 0.0])])
def test_a_mask_per_sequence_equals_each_sequence_alone(sink_logits):
    """(B, Tq, N) masks, e.g. left padding: a padded key holding NaN never reaches the output."""
    B, H, Hkv, T, Dh = 2, 4, 2, 9, 8
    q, k, v = qkv(B, H, Hkv, T, Dh, seed=5)
    pos = torch.arange(T)
    allowed = allowed_by_position(pos, pos, 3, 1).expand(B, T, T).clone()  # (B, T, T)
    allowed[1, :, :2] = False                                            # sequence 1: 2 pad tokens
    v[1, :, :2] = float("nan")
    ours = masked_attention(q, k, v, allowed, sink_logits=sink_logits)
    for b in range(B):
        alone = masked_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1].nan_to_num(0.0), allowed[b],
                                 sink_logits=sink_logits)
        torch.testing.assert_close(ours[b:b + 1], alone, atol=ATOL, rtol=0)
    assert not ours.isnan().any()


# --------------------------------------------------------------------------- bad input
def test_decode_attention_bad_input_names_the_argument():
    cache = RingKVCache(2)
    q, k, v = qkv(1, 4, 2, 3, 8)
    with pytest.raises(ValueError, match="view is empty"):
        decode_attention(q[:, :, :1], cache.view())
    cache.update(k[:, :, :1], v[:, :, :1])
    view = cache.view()
    with pytest.raises(ValueError, match=r"^q must have one position"):
        decode_attention(q, view)
    with pytest.raises(ValueError, match=r"^k and v must be \(B, H_kv, N, Dh\)"):
        decode_attention(q[:, :3, :1], view)                             # 3 query heads over 2 kv heads
    with pytest.raises(ValueError, match=r"^k and v must be"):
        decode_attention(q[:, :, :1, :4], view)                          # Dh differs
    with pytest.raises(ValueError, match=r"^sink_logits must have shape \(H,\) = \(4,\)"):
        decode_attention(q[:, :, :1], view, sink_logits=torch.zeros(2))
    with pytest.raises(TypeError, match=r"^sink_logits must be a floating tensor"):
        decode_attention(q[:, :, :1], view, sink_logits=[0.0] * 4)
    with pytest.raises(TypeError, match=r"^view must be a CacheView"):
        decode_attention(q[:, :, :1], cache)
    with pytest.raises(ValueError, match=r"^positions must be a \(Tq,\) = \(3,\)"):
        decode_attention(q, view, positions=torch.tensor([0]))
    with pytest.raises(TypeError, match=r"^scale must be a real number"):
        decode_attention(q[:, :, :1], view, scale="1")
    with pytest.raises(ValueError, match=r"^scale must be finite"):
        decode_attention(q[:, :, :1], view, scale=float("nan"))
    with pytest.raises(ValueError, match=r"^q must have shape \(B, H, T, Dh\)"):
        decode_attention(q[0], view)


def test_softcap_caps_the_scaled_scores_before_the_mask():
    q, k, v = qkv(1, 2, 2, 6, 4, seed=9)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2)) / 2.0                              # (1, 2, 6, 6), Dh = 4
    capped = torch.tanh(scores / 0.3) * 0.3
    want = capped.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    got = masked_attention(q, k, v, allowed, softcap=0.3)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (masked_attention(q, k, v, allowed) - want).abs().max() > 1e-3
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="softcap must be a positive finite number"):
            masked_attention(q, k, v, allowed, softcap=bad)
    for bad in (True, "1"):
        with pytest.raises(TypeError, match="softcap must be a positive number"):
            masked_attention(q, k, v, allowed, softcap=bad)
