"""``tutor.costs``: the pair counter, the blocked backend's formulas, and the cost model checked
against what the implementations really run (every matmul, counted at dispatch) and really allocate
(the CPU allocator's events under torch's profiler).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from tutor import costs
from tutor.attention import dense_attention, unfold_attention
from tutor.attention import blocked as blocked_mod
from tutor.costs import (attention_cost, blocks_per_chunk, count_allowed, default_block_size, hybrid_pairs,
                         key_span)
from tutor.masks import generate_causal_window, generate_local_window, hybrid_mask, hybrid_mask_mod


def one_row(T, positions):
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, list(positions)] = True
    return gm


# --------------------------------------------------------------------------- the pair counter
def test_hand_counts():
    assert hybrid_pairs(5, 1) == 13                            # 2 + 3 + 3 + 3 + 2
    assert hybrid_pairs(5, 1, causal=True) == 9                # 1 + 2 + 2 + 2 + 2
    assert hybrid_pairs(5, 0) == 5
    assert hybrid_pairs(5, 4) == hybrid_pairs(5, 100) == 25    # a window wider than T adds nothing
    assert hybrid_pairs(5, 100, causal=True) == 15
    assert hybrid_pairs(5, 0, [2]) == 5 + 4 + 4                # row 2 reads all, column 2 read by all
    assert count_allowed(generate_local_window(1), 5) == 13
    assert count_allowed(generate_causal_window(1), 5) == 9


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 40), window=st.integers(0, 45), causal=st.booleans(), data=st.data())
def test_three_ways_of_counting_agree(T, window, causal, data):
    """The closed form, the predicate walked in row blocks, and the materialized mask."""
    positions = data.draw(st.lists(st.integers(0, T - 1), max_size=5))
    gm = one_row(T, positions)
    mask = hybrid_mask(T, window, gm, causal=causal)
    want = int(mask.sum())
    assert count_allowed(mask) == want
    rows = data.draw(st.sampled_from([1, T, 3 * T, 1 << 24]))  # one row per block .. all at once
    assert count_allowed(hybrid_mask_mod(window, gm, causal=causal), T, max_elements=rows) == want
    assert hybrid_pairs(T, window, positions, causal=causal) == want


def test_count_allowed_over_a_batch():
    gm = torch.tensor([[True, False, False, False], [False, False, False, False]])
    mod = hybrid_mask_mod(0, gm)
    assert count_allowed(mod, 4, B=2) == count_allowed(hybrid_mask(4, 0, gm)) == (4 + 2 + 2 + 2) + 4   # row 0 reads all; rows 1-3 self + key 0


@pytest.mark.parametrize("args, kwargs, error, word", [
    ((torch.ones(2, 2),), {}, TypeError, "bool"),
    ((torch.ones(1, 2, 2, dtype=torch.bool), 2), {}, TypeError, "T"),
    ((generate_local_window(1),), {}, TypeError, "T"),
    ((generate_local_window(1), 0), {}, ValueError, "T"),
    ((generate_local_window(1), 4), {"B": 0}, ValueError, "B"),
    (("not a mask",), {}, TypeError, "mask"),
])
def test_count_allowed_bad_input(args, kwargs, error, word):
    with pytest.raises(error, match=word):
        count_allowed(*args, **kwargs)


def test_hybrid_pairs_bad_input():
    with pytest.raises(ValueError, match="global_positions"):
        hybrid_pairs(4, 1, [4])
    with pytest.raises(ValueError, match="window"):
        hybrid_pairs(4, -1)
    with pytest.raises(TypeError, match="T"):
        hybrid_pairs(4.0, 1)


# --------------------------------------------------------------------------- the blocked backend's formulas
def test_key_span_is_whole_blocks():
    assert key_span(16, 32) == (1, 96)                         # the example: not b + 2w = 64
    assert key_span(16, 32, causal=True) == (1, 64)
    assert key_span(64, 64) == (1, 192)
    assert key_span(65, 64) == (2, 320)
    assert key_span(0, 32) == (0, 32)


def test_blocked_runs_on_the_cost_models_budget():
    assert blocked_mod.CHUNK_ELEMENTS == costs.CHUNK_ELEMENTS
    assert blocked_mod.CUDA_CHUNK_ELEMENTS == costs.CUDA_CHUNK_ELEMENTS
    assert blocked_mod.default_block_size is default_block_size and blocked_mod.key_span is key_span
    assert blocks_per_chunk(2, 32, 96, 2) == (1 << 20) // (2 * 32 * 98)
    assert blocks_per_chunk(1 << 20, 128, 384, 0) == 1          # never less than one block


# --------------------------------------------------------------------------- the model vs the code
class MatmulFlops(TorchDispatchMode):
    """FLOPs of every (batched) matmul the code dispatches, in-place ones included (2 per multiply-add)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__.rstrip("_")
        if name in ("bmm", "mm", "baddbmm", "addmm"):
            a, b = (args[0], args[1]) if name in ("bmm", "mm") else (args[1], args[2])
            batch = a.shape[0] if a.dim() == 3 else 1
            self.flops += 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
        return func(*args, **(kwargs or {}))


SETTINGS = [  # B, H, T, Dh, window, G, causal
    (1, 2, 2048, 16, 16, 2, False),    # b = 32, S = 96 (the example), one chunk
    (1, 2, 1000, 16, 64, 0, False),    # T not a multiple of b
    (2, 2, 300, 32, 40, 3, True),      # n_side = 2, causal
    (1, 1, 7, 8, 5, 1, False),         # T < b
]
IMPL_FNS = {"dense": dense_attention, "unfold": unfold_attention, "hybrid": blocked_mod.blocked_hybrid_attention}


def inputs(B, H, T, Dh, G, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, [i * T // G for i in range(G)]] = True
    return q, k, v, gm


@pytest.mark.parametrize("impl", costs.IMPLS)
@pytest.mark.parametrize("B, H, T, Dh, window, G, causal", SETTINGS)
def test_predicted_flops_are_the_matmuls_the_code_runs(impl, B, H, T, Dh, window, G, causal):
    q, k, v, gm = inputs(B, H, T, Dh, G)
    with torch.no_grad(), MatmulFlops() as counted:
        IMPL_FNS[impl](q, k, v, window, gm, causal=causal)
    assert attention_cost(impl, T, window, G, B=B, H=H, Dh=Dh, causal=causal)["flops"] == counted.flops


def peak_bytes(fn) -> int:
    """Peak of live bytes the CPU allocator hands out during ``fn()`` (allocations minus frees)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("impl, B, H, T, Dh, window, G, causal", [
    ("hybrid", 1, 2, 2048, 16, 16, 2, False),     # one chunk
    ("hybrid", 1, 2, 12800, 16, 64, 0, False),    # five chunks
    ("hybrid", 2, 2, 3000, 32, 40, 3, True),      # a big and a small chunk
    ("unfold", 1, 2, 1024, 16, 16, 2, False),
    ("unfold", 2, 2, 600, 32, 40, 3, True),
    ("dense", 1, 2, 1024, 16, 16, 2, False),
])
def test_predicted_memory_is_what_the_code_allocates(impl, B, H, T, Dh, window, G, causal):
    """Within 15 %: a key span of b + 2w instead of whole blocks (or a lost chunk cap) falls outside."""
    q, k, v, gm = inputs(B, H, T, Dh, G)
    fn = IMPL_FNS[impl]
    with torch.no_grad():
        fn(q, k, v, window, gm, causal=causal)                 # warm-up: one-time caches
        measured = peak_bytes(lambda: fn(q, k, v, window, gm, causal=causal))
    inputs_bytes = 3 * B * H * T * Dh * 4                      # q, k, v exist before the call
    predicted = attention_cost(impl, T, window, G, B=B, H=H, Dh=Dh, causal=causal)["memory_bytes"] - inputs_bytes
    assert 0.85 < measured / predicted < 1.15, f"measured {measured / 2**20:.2f} MiB, model {predicted / 2**20:.2f} MiB"


def test_attention_cost_grows_as_taught():
    """Dense is quadratic in T; unfold and hybrid linear (hybrid's chunk is capped, so at most linear)."""
    big = [attention_cost(i, 1 << 14, 16, 2) for i in costs.IMPLS]
    bigger = [attention_cost(i, 1 << 15, 16, 2) for i in costs.IMPLS]
    assert bigger[0]["flops"] == 4 * big[0]["flops"]
    assert bigger[1]["flops"] == 2 * big[1]["flops"]
    assert bigger[2]["flops"] == pytest.approx(2 * big[2]["flops"], rel=1e-3)
    mem = [b["memory_bytes"] / a["memory_bytes"] for a, b in zip(big, bigger)]
    assert mem[0] == pytest.approx(4, rel=0.01) and mem[1] == pytest.approx(2, rel=0.01) and 1 < mem[2] <= 2
    assert big[2]["memory_bytes"] < big[1]["memory_bytes"] < big[0]["memory_bytes"]
    # unfold's K/V window (2w+1) Dh per query outgrows dense's 4 T scores when (2w+1) Dh > 4T
    assert attention_cost("unfold", 1024, 64)["memory_bytes"] > attention_cost("dense", 1024, 64)["memory_bytes"]
    hyb = attention_cost("hybrid", 1024, 16, 3, B=2, H=4, Dh=8)
    b = default_block_size(16, 1024)
    assert hyb["flops"] == 4 * 2 * 4 * 8 * (math.ceil(1024 / b) * b * (key_span(16, b)[1] + 3) + 3 * 1024)


@pytest.mark.parametrize("kwargs, error, word", [
    (dict(impl="flash", T=8, window=1), ValueError, "impl"),
    (dict(impl="dense", T=8, window=1, G=9), ValueError, "G"),
    (dict(impl="dense", T=0, window=1), ValueError, "T"),
    (dict(impl="hybrid", T=8, window=-1), ValueError, "window"),
    (dict(impl="unfold", T=8, window=1, Dh=1.5), TypeError, "Dh"),
])
def test_attention_cost_bad_input(kwargs, error, word):
    with pytest.raises(error, match=word):
        attention_cost(**kwargs)
