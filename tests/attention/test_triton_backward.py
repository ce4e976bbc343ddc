"""The Triton backend trains: its backward kernels against dense gradients, under Triton's CPU
interpreter (in a child process, so that TRITON_INTERPRET=1 is set before triton is imported).

The interpreter is slow, so the cases are few and small, each chosen for a rule: several tiles of
16 (T not a multiple), global keys inside and outside windows, per-sequence global counts, a padded
global, padding, a fully padded sequence, causal, w >= T, T = 1, every token global, float16, and
the saved log-sum-exp itself (+inf on a row with no key), and the global rows against
:mod:`tutor.attention.global_rows`. The tiles are 16 x 16, so windows cross tile borders.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None

SCRIPT = textwrap.dedent("""
    import json, math, os
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    from tutor.attention import dense_attention, hybrid_attention
    from tutor.attention.global_rows import global_rows
    from tutor.attention.global_tokens import gather_tokens, global_slots
    from tutor.attention.triton_kernel import triton_hybrid_attention, triton_hybrid_forward
    from tutor.masks import hybrid_mask

    def inputs(B, H, T, Dh, globals_, pad, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
        do = torch.randn(B, H, T, Dh, generator=g)
        gm = torch.zeros(B, T, dtype=torch.bool)
        kpm = torch.zeros(B, T, dtype=torch.bool)
        for b, (pos, n) in enumerate(zip(globals_, pad)):
            gm[b, list(pos)] = True
            if n:
                kpm[b, T - n:] = True
        return q, k, v, do, gm, kpm

    def grads(fn, q, k, v, do, dtype, **kw):
        q, k, v = (x.to(dtype).requires_grad_() for x in (q, k, v))
        out = fn(q, k, v, **kw)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), do.to(dtype))
        return out, dq, dk, dv

    CASES = {   # name: B, H, T, Dh, window, globals per sequence, tail padding per sequence, causal, dtype
        "globals inside and outside windows, padding": (2, 2, 40, 16, 5, [(3, 20), (0, 1, 39, 33)], [0, 8], False, "float32"),
        "causal, T not a multiple of the tile": (1, 2, 37, 16, 4, [(0, 17)], [5], True, "float32"),
        "a fully padded sequence": (2, 1, 20, 8, 2, [(4,), (1,)], [0, 20], False, "float32"),
        "w >= T, no globals": (1, 1, 18, 16, 30, [()], [0], False, "float32"),
        "T = 1": (2, 1, 1, 16, 0, [(), (0,)], [0, 0], False, "float32"),
        "every token global": (1, 1, 20, 16, 1, [tuple(range(20))], [0], True, "float32"),
        "float16": (1, 2, 40, 32, 6, [(10,)], [4], False, "float16"),
    }
    results = {}
    for name, (B, H, T, Dh, w, globals_, pad, causal, dt) in CASES.items():
        dtype = getattr(torch, dt)
        q, k, v, do, gm, kpm = inputs(B, H, T, Dh, globals_, pad, dtype, seed=len(results))
        kw = dict(window=w, global_mask=gm, key_padding_mask=kpm, causal=causal)
        got = grads(triton_hybrid_attention, q, k, v, do, dtype, block_m=16, block_n=16, **kw)
        want = grads(dense_attention, q, k, v, do, torch.float32, **kw)    # float32 reference
        errs = [(a.float() - b).abs().max().item() for a, b in zip(got, want)]
        finite = all(bool(torch.isfinite(x).all()) for x in got)
        padded = kpm[:, None, :, None].expand_as(got[1])
        zero_pad = all(bool((x[padded] == 0).all()) for x in got[1:])    # padded rows: no gradient at all
        results[name] = {"dtypes": sorted({str(x.dtype) for x in got}), "errs": errs, "finite": finite,
                         "zero_pad": zero_pad}

    # the saved log-sum-exp: the dense masked scores' logsumexp, +inf on padded rows (no allowed key)
    q, k, v, do, gm, kpm = inputs(2, 2, 40, 16, [(3, 20), (0, 39)], [0, 8], torch.float32, seed=9)
    out, lse = triton_hybrid_forward(q, k, v, 5, gm, kpm, block_m=16, block_n=16)
    allowed = hybrid_mask(40, 5, gm, kpm)[:, None]                          # (B, 1, T, T)
    s = (q @ k.transpose(-1, -2) / 4.0).masked_fill(~allowed, float("-inf"))
    ref = torch.logsumexp(s, dim=-1)
    live = torch.isfinite(ref)
    results["lse"] = {"err": (lse[live] - ref[live]).abs().max().item(),
                      "dead_match": bool(torch.equal(lse == float("inf"), ~live)),
                      "requires_grad": lse.requires_grad, "dtype": str(lse.dtype)}

    # the global rows against the one global-rows module (the reference the kernel path must match)
    idx, valid = global_slots(gm, kpm, 2, 40, "cpu")                       # (B, G), (B, G)
    rows = global_rows(gather_tokens(q, idx), k, v, idx, valid, kpm, False, 0.25, torch.float32)
    ok = valid[:, None, :].expand(-1, 2, -1)                               # (B, H, G)
    results["global rows"] = {"out": (gather_tokens(out, idx) - rows.out)[ok].abs().max().item(),
                              "lse": (gather_tokens(lse[..., None], idx)[..., 0] - rows.lse)[ok].abs().max().item()}

    # through the dispatcher, with B = 0, and a scale that is not 1/sqrt(Dh)
    q, k, v, do, gm, kpm = inputs(1, 2, 24, 16, [(5,)], [0], torch.float32, seed=11)
    a = grads(lambda *x, **kw: hybrid_attention(*x, backend="triton", **kw), q, k, v, do, torch.float32,
              window=3, global_mask=gm, scale=0.7)
    b = grads(dense_attention, q, k, v, do, torch.float32, window=3, global_mask=gm, scale=0.7)
    results["dispatcher, scale=0.7"] = max((x - y).abs().max().item() for x, y in zip(a, b))
    e = torch.randn(0, 2, 8, 16, requires_grad=True)
    out = triton_hybrid_attention(e, e, e, 2)
    out.sum().backward()
    results["B = 0"] = [list(out.shape), list(e.grad.shape)]
    try:
        triton_hybrid_attention(e, e, e, 2, causal="yes")
        results["bad causal"] = "no error"
    except TypeError as exc:
        results["bad causal"] = str(exc)
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def results():
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=400, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["globals inside and outside windows, padding", "causal, T not a multiple of the tile",
                                  "a fully padded sequence", "w >= T, no globals", "T = 1", "every token global"])
def test_float32_gradients_equal_dense(results, name):
    r = results[name]
    assert r["dtypes"] == ["torch.float32"] and r["finite"] and r["zero_pad"], r
    out_err, *grad_errs = r["errs"]
    assert out_err < 1e-5 and max(grad_errs) < 1e-4, r


def test_float16_gradients_close_to_float32(results):
    r = results["float16"]
    assert r["dtypes"] == ["torch.float16"] and r["finite"] and r["zero_pad"], r
    assert max(r["errs"]) < 2e-2, r


def test_saved_log_sum_exp(results):
    r = results["lse"]
    assert r["err"] < 1e-5 and r["dead_match"], r                          # +inf exactly on padded rows
    assert r["dtype"] == "torch.float32" and not r["requires_grad"]


def test_global_rows_equal_the_global_rows_module(results):
    r = results["global rows"]
    assert r["out"] < 1e-6 and r["lse"] < 1e-6, r


def test_dispatcher_scale_empty_batch_and_flags(results):
    assert results["dispatcher, scale=0.7"] < 1e-4
    assert results["B = 0"] == [[0, 2, 8, 16], [0, 2, 8, 16]]
    assert "causal" in results["bad causal"]
