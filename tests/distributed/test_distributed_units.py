"""The pieces of tutor.distributed that need no process group: shards, halo plans, the log-sum-exp
merge, traffic formulas, figures; plus one spawned group whose rank fails, to show a failure
ends the run with that rank's error instead of a hang."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from matplotlib.figure import Figure

import distributed_cases as cases
from tutor.attention.softmax import masked_softmax
from tutor.distributed import finish, halo_pieces, halo_plan, merge_states, partial_state, shard_bounds, shard_sequence
from tutor.distributed.figures import key_sources, plot_shard_halos, plot_traffic
from tutor.distributed.launch import run
from tutor.distributed.halo import halo_rows
from tutor.distributed.traffic import all_gather_rows, layer_bytes
from tutor.masks import hybrid_mask


@given(T=st.integers(1, 60), P=st.integers(1, 7), window=st.integers(0, 70), causal=st.booleans())
@settings(max_examples=150, deadline=None)
def test_halo_pieces_are_exactly_the_keys_outside_the_shard(T, P, window, causal):
    """Brute force: the keys some query of the shard may read in its window, that other ranks hold."""
    if P > T:
        P = T
    bounds = shard_bounds(T, P)
    assert bounds[0][0] == 0 and bounds[-1][1] == T and all(e - s in (T // P, T // P + 1) for s, e in bounds)
    for rank, (s, e) in enumerate(bounds):
        want = {j for i in range(s, e) for j in range(T)
                if (0 <= i - j <= window if causal else abs(i - j) <= window) and not s <= j < e}
        got = [bounds[p.src][0] + j for p in halo_pieces(bounds, rank, window, causal) for j in range(p.lo, p.hi)]
        assert sorted(got) == got and set(got) == want and len(got) == len(want)
        assert all(p.src != rank and p.lo < p.hi for p in halo_pieces(bounds, rank, window, causal))
    assert halo_plan(bounds, window, causal) == [p for r in range(P) for p in halo_pieces(bounds, r, window, causal)]


def test_shard_sequence_round_trip():
    x = torch.arange(2 * 11 * 3).reshape(2, 11, 3)
    parts = [shard_sequence(x, r, 4, 1) for r in range(4)]
    assert [p.shape[1] for p in parts] == [3, 3, 3, 2]
    assert torch.equal(torch.cat(parts, dim=1), x)
    assert shard_sequence(None, 0, 2, 1) is None


@pytest.mark.parametrize("pieces", [1, 2, 3, 5])
@pytest.mark.parametrize("std", [1.0, 80.0])
def test_merged_states_equal_one_softmax(pieces, std):
    """Any split of the keys, merged in any order, gives the softmax over all of them (float64)."""
    g = torch.Generator().manual_seed(pieces)
    G, n, Dh = 5, 17, 4
    s = torch.randn(G, n, generator=g, dtype=torch.float64) * std
    v = torch.randn(n, Dh, generator=g, dtype=torch.float64)
    ok = torch.rand(G, n, generator=g) > 0.3
    ok[0] = False                                                         # a row with no key at all
    ok[1, : n // 2] = False                                               # a row whose keys are all in the 2nd half
    want = masked_softmax(s, ok) @ v                                      # (G, Dh)
    cuts = [0] + sorted(torch.randperm(n - 1, generator=g)[: pieces - 1].add(1).tolist()) + [n]
    states = [partial_state(s[:, a:b], ok[:, a:b], v[a:b]) for a, b in zip(cuts, cuts[1:])]
    for order in itertools.islice(itertools.permutations(states), 4):
        merged = order[0]
        for st_ in order[1:]:
            merged = merge_states(merged, st_)
        out = finish(merged)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-12)
    assert (finish(merged)[0] == 0).all()


def test_merge_gradient_matches_softmax():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(8, 2, generator=g, dtype=torch.float64, requires_grad=True)
    ok = torch.ones(3, 8, dtype=torch.bool)
    out = finish(merge_states(partial_state(s[:, :3], ok[:, :3], v[:3]), partial_state(s[:, 3:], ok[:, 3:], v[3:])))
    grads = torch.autograd.grad(out.square().sum(), (s, v))
    want = torch.autograd.grad((torch.softmax(s, -1) @ v).square().sum(), (s, v))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b)


def test_traffic_formulas():
    # a middle rank sends w rows to each neighbour, whatever T is: O(w), not O(T)
    assert halo_rows(65536, 4, 64) == halo_rows(2 ** 20, 4, 64) == 128
    assert halo_rows(65536, 4, 64, causal=True) == 64
    assert halo_rows(16, 4, 100) == 3 * 4                                 # w >= T: everything to everyone
    assert all_gather_rows(65536, 4) == 3 * 16384
    assert layer_bytes(128, 1, 2, 32, 4) == 2 * 128 * 2 * 32 * 4
    assert all_gather_rows(65536, 4) / halo_rows(65536, 4, 64) >= 100


def test_key_sources_partition_the_hybrid_mask():
    T, P, w, gpos = 30, 4, 4, [3, 20]
    kinds = key_sources(T, P, w, gpos)
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, gpos] = True
    allowed = hybrid_mask(T, w, gm)[0].numpy()
    assert np.array_equal(kinds > 0, allowed)
    owner = np.repeat(np.arange(P), [e - s for s, e in shard_bounds(T, P)])
    i, j = np.nonzero(kinds == 2)                                          # halo keys: near, on another rank
    assert (np.abs(i - j) <= w).all() and (owner[i] != owner[j]).all()
    i, j = np.nonzero(kinds == 3)                                          # far global keys
    assert set(j.tolist()) <= set(gpos)
    assert isinstance(plot_shard_halos(T, P, w, gpos, causal=True), Figure)
    assert isinstance(plot_traffic([1024, 4096], [2, 4], 8), Figure)


def test_a_failing_rank_ends_the_run_with_its_error():
    with pytest.raises(RuntimeError, match="planted failure on rank 1"):
        run(cases.fail_on_rank_1, 2, timeout=90, collective_timeout=5)
