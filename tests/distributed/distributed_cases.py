"""Cases for tests/distributed/test_distributed.py, run inside spawned gloo process groups.

Each function here runs on every rank of a group started by :func:`tutor.distributed.launch.run`
and returns plain numbers or strings, so one spawned group checks many cases. Every rank builds
the same seeded whole-sequence inputs, computes the single-process reference itself and compares
its own shard of the output and of the gradients.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from tutor.attention import HybridSparseAttention, hybrid_attention
from tutor.distributed.demo import training_check
from tutor.distributed import (count_traffic, gather_sequence, sequence_parallel_attention, shard_bounds,
                               shard_sequence)
from tutor.distributed.layer import SequenceParallelAttention, all_reduce_grads
from tutor.distributed.halo import halo_rows


def _globals(T: int, P: int, kind: str, B: int) -> torch.Tensor:
    gm = torch.zeros(B, T, dtype=torch.bool)
    bounds = shard_bounds(T, P)
    if kind == "one rank":                       # all in rank 0's shard
        gm[:, 0] = True
        gm[0, bounds[0][1] - 1] = True
    elif kind == "every rank":                   # one per shard, plus a second one in sequence 0
        for s, e in bounds:
            gm[:, (s + e) // 2] = True
        gm[0, T - 1] = True
    elif kind == "per sequence":                 # 3, 0, 1 global tokens in sequences 0, 1, 2
        gm[0, [1, T // 2, T - 2]] = True
        if B > 2:
            gm[2, T - 1] = True
    return gm


def _padding(T: int, P: int, kind: str, B: int) -> torch.Tensor:
    kpm = torch.zeros(B, T, dtype=torch.bool)
    if kind == "tail":
        kpm[B - 1, T - 3:] = True
    elif kind == "shard":                         # sequence 1: the whole last shard is padding
        s, _ = shard_bounds(T, P)[-1]
        kpm[1, s:] = True
    return kpm


#: name -> (T as a function of P, window, globals, padding, causal, dtype, batch size)
CASES = {
    "T not divisible by P, no global": (lambda P: 4 * P + 1, 1, "none", "none", False, torch.float32, 2),
    "w larger than a shard, globals on every rank": (lambda P: 3 * P + 2, 7, "every rank", "none", False, torch.float32, 2),
    "w >= T, globals on one rank": (lambda P: 11, 20, "one rank", "none", False, torch.float32, 2),
    "w >= T causal": (lambda P: 9, 9, "per sequence", "tail", True, torch.float32, 3),
    "per-sequence global counts, padding, causal": (lambda P: 5 * P + 3, 3, "per sequence", "tail", True, torch.float32, 3),
    "fully padded shard": (lambda P: 4 * P, 2, "every rank", "shard", False, torch.float32, 2),
    "fully padded shard, causal": (lambda P: 4 * P, 2, "every rank", "shard", True, torch.float32, 2),
    "window 0 with globals": (lambda P: 3 * P + 1, 0, "per sequence", "tail", False, torch.float32, 3),
    "bfloat16": (lambda P: 5 * P + 1, 3, "per sequence", "tail", False, torch.bfloat16, 3),
    "float16": (lambda P: 4 * P + 3, 2, "every rank", "tail", False, torch.float16, 2),
    "bfloat16 causal, w larger than a shard": (lambda P: 2 * P + 1, 5, "every rank", "shard", True, torch.bfloat16, 2),
}


def compare_case(name: str, seed: int = 0, scale=None) -> dict:
    """Max |shard - reference shard| of the output and of dq, dk, dv, plus the reference's size."""
    rank, P = dist.get_rank(), dist.get_world_size()
    T_of, window, glob, pad, causal, dtype, B = CASES[name]
    T, H, Dh = T_of(P), 2, 8
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g).to(dtype).requires_grad_() for _ in range(3))
    gm, kpm = _globals(T, P, glob, B), _padding(T, P, pad, B)
    ref = hybrid_attention(q, k, v, window, gm, kpm, causal=causal, scale=scale)
    grad_out = torch.randn(ref.shape, generator=g).to(dtype)
    (ref.float() * grad_out.float()).sum().backward()
    mine = [shard_sequence(t.detach(), rank, P, 2).clone().requires_grad_() for t in (q, k, v)]
    out = sequence_parallel_attention(*mine, window, shard_sequence(gm, rank, P, 1), shard_sequence(kpm, rank, P, 1),
                                      causal=causal, scale=scale)
    (out.float() * shard_sequence(grad_out, rank, P, 2).float()).sum().backward()
    res = {"dtype": str(out.dtype), "shape_ok": out.shape == mine[0].shape,
           "finite": bool(torch.isfinite(out).all())}
    for key, got, want in (("out", out, ref), ("dq", mine[0].grad, q.grad), ("dk", mine[1].grad, k.grad),
                           ("dv", mine[2].grad, v.grad)):
        want = shard_sequence(want, rank, P, 2)
        res[key] = float((got.detach().float() - want.float()).abs().max())
        res[key + "_size"] = float(want.float().abs().max())
    return res


def random_cases(n: int, seed: int = 1234) -> dict:
    """``n`` random float32 problems (T, w, B, globals, padding, causal drawn from one seeded generator,
    so every rank draws the same): the worst error of each quantity over all of them, and the case."""
    rank, P = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(seed)
    worst = {"out": 0.0, "dq": 0.0, "dk": 0.0, "dv": 0.0}
    where = {}
    for n_case in range(n):
        T = int(torch.randint(P, 6 * P + 8, (1,), generator=g))
        window = int(torch.randint(0, T + 3, (1,), generator=g))
        B = int(torch.randint(1, 4, (1,), generator=g))
        causal = bool(torch.randint(0, 2, (1,), generator=g))
        gm = torch.rand(B, T, generator=g) < float(torch.rand(1, generator=g)) * 0.3          # (B, T)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        kpm = torch.arange(T)[None, :] >= lengths[:, None]                                     # (B, T) tail padding
        q, k, v = (torch.randn(B, 2, T, 4, generator=g, requires_grad=True) for _ in range(3))
        ref = hybrid_attention(q, k, v, window, gm, kpm, causal=causal)
        grad_out = torch.randn(ref.shape, generator=g)
        (ref * grad_out).sum().backward()
        mine = [shard_sequence(t.detach(), rank, P, 2).clone().requires_grad_() for t in (q, k, v)]
        out = sequence_parallel_attention(*mine, window, shard_sequence(gm, rank, P, 1),
                                          shard_sequence(kpm, rank, P, 1), causal=causal)
        (out * shard_sequence(grad_out, rank, P, 2)).sum().backward()
        for key, got, want in (("out", out, ref), ("dq", mine[0].grad, q.grad), ("dk", mine[1].grad, k.grad),
                               ("dv", mine[2].grad, v.grad)):
            err = float((got.detach() - shard_sequence(want, rank, P, 2)).abs().max())
            if err > worst[key]:
                worst[key], where[key] = err, dict(case=n_case, T=T, window=window, B=B, causal=causal)
    return {"worst": worst, "where": where}


SCALES = (0.3, 0.0, -0.7)


def run_cases(names) -> dict:
    """Every named case, plus the scale= cases (zero and negative run, as in hybrid_attention); on one rank."""
    results = {name: compare_case(name) for name in names}
    for scale in SCALES:
        results[f"scale={scale}"] = compare_case("per-sequence global counts, padding, causal", seed=1, scale=scale)
    return results


def layer_case() -> dict:
    """SequenceParallelAttention vs HybridSparseAttention: outputs and all-reduced parameter grads."""
    rank, P = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    layer = HybridSparseAttention(16, 2, 3)
    B, T = 2, 3 * P + 2
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, 16, generator=g)
    gm, kpm = _globals(T, P, "per sequence", B), _padding(T, P, "tail", B)
    ref = layer(x, gm, kpm)
    ref.pow(2).sum().backward()
    want = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    y = SequenceParallelAttention(layer)(shard_sequence(x, rank, P, 1), shard_sequence(gm, rank, P, 1),
                                         shard_sequence(kpm, rank, P, 1))
    y.pow(2).sum().backward()
    all_reduce_grads(layer)
    whole = gather_sequence(y, dim=1)                                         # (B, T, 16) on every rank
    return {"out": float((y - shard_sequence(ref, rank, P, 1)).abs().max()),
            "gathered": float((whole - ref).abs().max()) if whole.shape == ref.shape else float("inf"),
            "grads": max(float((p.grad - want[n]).abs().max()) for n, p in layer.named_parameters()),
            "padded_rows_zero": bool((y[shard_sequence(kpm, rank, P, 1)] == 0).all())}


def traffic_case(T: int, window: int) -> dict:
    """Bytes this rank sent in a forward with no global token, next to the formula."""
    rank, P = dist.get_rank(), dist.get_world_size()
    B, H, Dh = 1, 2, 4
    q = shard_sequence(torch.randn(B, H, T, Dh), rank, P, 2)
    with count_traffic() as sent:
        sequence_parallel_attention(q, q, q, window)
    return {"halo": sent.get("halo", 0), "formula_max": halo_rows(T, P, window) * 2 * B * H * Dh * 4
            + halo_rows(T, P, window) * B}                                    # K, V float32 + padding bytes


def bad_input_case(kind: str) -> str:
    """The error every rank raises for one kind of bad input ('no error' if none)."""
    rank, P = dist.get_rank(), dist.get_world_size()
    B, H, Dh, T_r, window = 2, 2, 4, 3, 2
    gm = None
    if kind == "Dh" and rank == P - 1:
        Dh = 8
    if kind == "B" and rank == 1:
        B = 3
    if kind == "window" and rank == 0:
        window = 3
    q = torch.randn(B, H, T_r, Dh, requires_grad=(kind == "grad" and rank == 0))
    if kind == "mask dtype" and rank == 1:
        gm = torch.zeros(B, T_r)                                              # float, not bool
    try:
        sequence_parallel_attention(q, q, q, window, gm)
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def bad_inputs() -> dict:
    return {kind: bad_input_case(kind) for kind in ("Dh", "B", "window", "grad", "mask dtype")}


def everything() -> dict:
    """All of the above in one spawned group."""
    return {"cases": run_cases(list(CASES)), "layer": layer_case(), "traffic": traffic_case(29, 5),
            "bad": bad_inputs(), "training": training_check(T=40, window=3), "random": random_cases(25)}


def fail_on_rank_1() -> str:
    """Rank 1 raises; rank 0 waits in a barrier until the collective timeout ends it."""
    if dist.get_rank() == 1:
        raise ValueError("planted failure on rank 1")
    dist.barrier()
    return "unreachable"
