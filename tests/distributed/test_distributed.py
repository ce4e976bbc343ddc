"""Sequence-parallel attention on real gloo process groups of 2, 3 and 4 ranks (127.0.0.1).

Spawning a group costs seconds, so each world size starts ONE group (a module fixture) that runs
every case of tests/distributed/distributed_cases.py; the tests below then read its results. Every
collective is bounded (``collective_timeout``) and so is every group (``timeout``): a bug fails
fast instead of hanging CI.
"""
from __future__ import annotations

import pytest

import distributed_cases as cases
from tutor.distributed.launch import run

WORLD_SIZES = (2, 3, 4)
TOL = {"torch.float32": 1e-5, "torch.bfloat16": 4e-2, "torch.float16": 5e-3}   # float32: absolute; else relative



@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda P: f"P={P}")
def group_results(request):
    P = request.param
    return P, run(cases.everything, P, timeout=240, collective_timeout=60)


@pytest.mark.parametrize("name", list(cases.CASES) + [f"scale={s}" for s in cases.SCALES])
def test_matches_one_process(group_results, name):
    P, per_rank = group_results
    for rank, res in enumerate(per_rank):
        r = res["cases"][name]
        assert r["shape_ok"] and r["finite"], f"P={P} rank {rank} {name}: {r}"
        tol = TOL[r["dtype"]]
        for key in ("out", "dq", "dk", "dv"):
            bound = tol if r["dtype"] == "torch.float32" else tol * max(1.0, r[key + "_size"])
            assert r[key] <= bound, f"P={P} rank {rank} {name}: max |{key} - one process| = {r[key]:.2e} > {bound:.1e}"


def test_random_problems_match_one_process(group_results):
    """25 seeded random problems per world size: T, w (up to T + 2), B, globals, padding, causal."""
    P, per_rank = group_results
    for rank, res in enumerate(per_rank):
        r = res["random"]
        assert max(r["worst"].values()) <= 1e-5, f"P={P} rank {rank}: {r}"


def test_layer_and_parameter_grads(group_results):
    P, per_rank = group_results
    for rank, res in enumerate(per_rank):
        r = res["layer"]
        assert r["out"] <= 1e-5 and r["grads"] <= 1e-5 and r["padded_rows_zero"], f"P={P} rank {rank}: {r}"
        assert r["gathered"] <= 1e-5, f"P={P} rank {rank}: gather_sequence does not give the whole output: {r}"


def test_halo_bytes_follow_the_plan(group_results):
    P, per_rank = group_results
    sent = [res["traffic"]["halo"] for res in per_rank]
    assert max(sent) == per_rank[0]["traffic"]["formula_max"], f"P={P}: bytes sent per rank {sent}"
    assert all(s > 0 for s in sent)


def test_encoder_training_step(group_results):
    """Notebook 06's TinyEncoder, sharded: one process's loss and all-reduced parameter gradients."""
    P, per_rank = group_results
    for rank, res in enumerate(per_rank):
        r = res["training"]
        assert r["loss_err"] <= 1e-6 and r["grad_err"] <= 1e-5, f"P={P} rank {rank}: {r}"


@pytest.mark.parametrize("kind, words", [("Dh", "Dh must be the same on every rank"),
                                         ("B", "B must be the same on every rank"),
                                         ("window", "window must be the same on every rank"),
                                         ("grad", "needs_grad must be the same on every rank"),
                                         ("mask dtype", "global_mask must be a bool tensor")])
def test_bad_input_raises_on_every_rank(group_results, kind, words):
    P, per_rank = group_results
    messages = [res["bad"][kind] for res in per_rank]
    assert all(m != "no error" for m in messages), f"P={P} {kind}: {messages}"
    if kind == "mask dtype":
        assert words in messages[1] and "TypeError" in messages[1]
        others = [m for r, m in enumerate(messages) if r != 1]
        assert all("rank(s) [1] got invalid arguments" in m for m in others), others
    else:
        assert all(words in m and m.startswith("ValueError") for m in messages), messages


def test_shard_bounds_and_halo_plan():
    from tutor.distributed import halo_pieces, halo_plan, shard_bounds
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    bounds = shard_bounds(10, 4)
    # w = 4 > shard length: rank 2 needs [2, 6) on its left (ranks 0 and 1) and [8, 10) on its right
    assert halo_pieces(bounds, 2, 4) == [(0, 2, 2, 3), (1, 2, 0, 3), (3, 2, 0, 2)]
    assert halo_pieces(bounds, 2, 4, causal=True) == [(0, 2, 2, 3), (1, 2, 0, 3)]
    assert halo_pieces(bounds, 0, 1) == [(1, 0, 0, 1)]
    assert halo_pieces(bounds, 1, 0) == []
    # only the ranks the window reaches
    assert {p.src for p in halo_pieces(shard_bounds(100, 10), 5, 12)} == {3, 4, 6, 7}
    assert sum(p.hi - p.lo for p in halo_plan(bounds, 100)) == 3 * 10        # w >= T: every rank gets all the rest


def test_demo_under_torchrun(tmp_path):
    """``torchrun --nproc-per-node 2 -m tutor.distributed.demo`` at small sizes prints its three checks."""
    import os
    import subprocess
    import sys
    from tutor.distributed.launch import free_port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "tutor.distributed.demo", "--T", "2048", "--check-T", "64",
           "--window", "8", "--timeout", "60"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "1. equality at T=64" in out and "2. T=2048" in out and "3. TinyEncoder training step" in out, out
    assert "less than all-gather" in out and "largest rank peak / one process" in out, out
