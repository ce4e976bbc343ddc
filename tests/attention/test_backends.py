"""The hybrid backends (blocked, flex, triton) and the ``auto`` choice, beyond the contract tests.

The contract (equality with dense on random cases) lives in tests/attention/test_attention_*.py; here we
pin what is specific to each backend: blocked's memory-saving mechanics and dtype paths,
FlexAttention's O(T) BlockMask (against ``create_block_mask``), its cache and its CPU
limits, the Triton kernel under Triton's CPU interpreter (in a subprocess, so that
TRITON_INTERPRET=1 is set before triton is imported), and how ``auto`` picks.
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
import torch

import tutor.attention.blocked as blocked_mod
import tutor.attention.block_masks as bm_mod
import tutor.attention.flex as flex_mod
import tutor.attention.hybrid as hybrid_mod
from tutor.attention import choose_backend, dense_attention, hybrid_attention
from tutor.attention.tiles import tile_states
from tutor.attention.blocked import blocked_hybrid_attention, default_block_size
from tutor.attention.blocked_steps import edge_slice

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None


def make_case(B=2, H=2, T=300, Dh=16, window=8, causal=False, dtype=torch.float32, seed=0):
    """Seeded inputs (T >= 40) with per-sequence global counts and padding in sequence 1."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g).to(dtype) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [3, T // 2]] = True                    # two globals in sequence 0
    gm[1, [0, 1, T - 1, T - 30]] = True          # four in sequence 1, one of them padded
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, T - 25:] = True
    return (q, k, v, window, gm, kpm), {"causal": causal}


# --------------------------------------------------------------------------- blocked
@pytest.mark.parametrize("window, T, want", [(64, 16384, 64), (128, 4096, 128), (1, 1000, 32),
                                             (1000, 100000, 128), (64, 5, 8), (0, 1, 1)])
def test_default_block_size_follows_window(window, T, want):
    assert default_block_size(window, T) == want


def test_edge_slice_is_a_view_inside_and_pads_only_at_the_ends():
    x = torch.randn(2, 3, 50, 4)
    inner = edge_slice(x, 10, 30)
    assert inner.data_ptr() == x[:, :, 10].data_ptr() and inner._base is x   # no copy of K/V
    edge = edge_slice(x, -3, 5, fill=0)
    assert edge.shape == (2, 3, 8, 4)
    assert torch.equal(edge[:, :, :3], torch.zeros(2, 3, 3, 4)) and torch.equal(edge[:, :, 3:], x[:, :, :5])
    flags = edge_slice(torch.zeros(2, 50, dtype=torch.bool), 45, 55, fill=True)
    assert flags.tolist() == [[False] * 5 + [True] * 5] * 2


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [1, 500, 1 << 21])
def test_blocked_chunks_globals_padding(causal, chunk, monkeypatch):
    """Many or one chunk; a global in every block position, padding, a sequence of padding."""
    args, kw = make_case(T=130, window=5, causal=causal)
    args[4][0, 64] = True                       # a global at a block boundary
    args[5][0, :] = True                        # sequence 0 entirely padding: all rows empty
    monkeypatch.setattr(blocked_mod, "CHUNK_ELEMENTS", chunk)
    want = dense_attention(*args, **kw)
    for bs in (None, 7, 32):
        got = blocked_hybrid_attention(*args, **kw, block_size=bs)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[0], torch.zeros_like(got[0]))


def test_blocked_inference_and_autograd_paths_agree():
    """No grad: output written in place chunk by chunk; with grad: chunks concatenated."""
    args, kw = make_case(T=97, window=6)
    q, k, v = (t.clone().requires_grad_() for t in args[:3])
    with torch.no_grad():
        fast = blocked_hybrid_attention(*args, **kw)
    out = blocked_hybrid_attention(q, k, v, *args[3:], **kw)
    torch.testing.assert_close(out.detach(), fast, atol=1e-6, rtol=1e-6)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    qd, kd, vd = (t.clone().requires_grad_() for t in args[:3])
    (dense_attention(qd, kd, vd, *args[3:], **kw) * w).sum().backward()
    for a, b in ((q, qd), (k, kd), (v, vd)):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_blocked_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 1, 11, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gm = torch.zeros(2, 11, dtype=torch.bool)
    gm[0, 5] = True
    kpm = torch.zeros(2, 11, dtype=torch.bool)
    kpm[1, 9:] = True
    assert torch.autograd.gradcheck(lambda a, b, c: blocked_hybrid_attention(a, b, c, 2, gm, kpm, block_size=4), (q, k, v))


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_blocked_half_precision_keeps_dtype_and_fp32_statistics(dtype, tol):
    args, kw = make_case(T=90, dtype=dtype)
    out = blocked_hybrid_attention(*args, **kw)
    assert out.dtype == dtype and torch.isfinite(out).all()
    want = dense_attention(*args, **kw)                     # float32 statistics, same rounding
    torch.testing.assert_close(out.float(), want.float(), atol=tol, rtol=tol)
    assert torch.equal(out[1, :, -25:], torch.zeros_like(out[1, :, -25:]))   # padded rows


def test_blocked_weights_match_dense():
    args, kw = make_case(T=70, window=4)
    out, w = blocked_hybrid_attention(*args, **kw, return_weights=True, block_size=16)
    want_out, want_w = dense_attention(*args, **kw, return_weights=True)
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, want_w, atol=1e-6, rtol=1e-5)


def test_blocked_rejects_bad_block_size():
    args, kw = make_case(T=20)
    for bad, exc in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="block_size"):                       # the one integer rule
            blocked_hybrid_attention(*args, block_size=bad)


# --------------------------------------------------------------------------- flex: block masks
@pytest.mark.parametrize("T, window, causal, layout", [(300, 8, False, "global_first"), (300, 8, True, "global_first"),
                                                       (530, 70, False, "global_first"), (300, 8, True, "in_place"),
                                                       (257, 0, False, "in_place")])
def test_block_mask_equals_create_block_mask(T, window, causal, layout):
    """Evaluating only the candidate tiles loses nothing: same tiles as the all-pairs builder."""
    from torch.nn.attention.flex_attention import create_block_mask
    args, _ = make_case(T=T, window=window)
    bm, idx, valid, Gp = bm_mod.flex_plan(2, T, window, args[4], args[5], causal, torch.device("cpu"), layout)
    want = create_block_mask(bm.mask_mod, 2, None, T + Gp, T + Gp, device="cpu")
    assert torch.equal(bm.to_dense(), want.to_dense())
    assert torch.equal(bm.full_kv_num_blocks, want.full_kv_num_blocks)
    assert torch.equal(tile_states(bm, 1), tile_states(want, 1))


def test_global_first_layout_keeps_the_band_sparse():
    """Globals in front: one dense tile row and column; in place they spread over more tiles."""
    T = 2048
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, [700, 1500]] = True
    first = tile_states(bm_mod.flex_plan(1, T, 64, gm, None, False, torch.device("cpu"))[0])
    inplace = tile_states(bm_mod.flex_plan(1, T, 64, gm, None, False, torch.device("cpu"), "in_place")[0])
    nb = T // 128
    assert (first > 0).sum() <= 3 * nb + 2 * (nb + 1)         # band + one row + one column
    assert (first > 0).sum() < (inplace > 0).sum()
    assert (first[0] > 0).all() and (first[:, 0] > 0).all()   # the global row and column of tiles


def test_flex_plan_cache_is_keyed_by_mask_contents_and_bounded(monkeypatch):
    monkeypatch.setattr(bm_mod, "_CACHE", type(bm_mod._CACHE)())
    monkeypatch.setattr(bm_mod, "CACHE_SIZE", 2)
    gm = torch.zeros(1, 256, dtype=torch.bool)
    gm[0, 5] = True
    a = bm_mod.flex_plan(1, 256, 4, gm, None, False, "cpu")
    assert bm_mod.flex_plan(1, 256, 4, gm.clone(), None, False, "cpu") is a   # same contents: hit
    gm[0, 5] = False                                            # the caller edits its mask in place
    gm[0, 9] = True
    b = bm_mod.flex_plan(1, 256, 4, gm, None, False, "cpu")
    assert b is not a and b[1].tolist() == [[9]] and a[1].tolist() == [[5]]   # a kept its own copy
    bm_mod.flex_plan(1, 256, 5, gm, None, False, "cpu")
    assert len(bm_mod._CACHE) == 2


# --------------------------------------------------------------------------- flex: why not, and running it
def test_flex_why_not_on_cpu():
    q = torch.randn(1, 1, 8, 4)
    assert "inference-only" in flex_mod.flex_why_not(q, True, False)
    assert "weights" in flex_mod.flex_why_not(q, False, True)
    assert "dropout" in flex_mod.flex_why_not(q, False, False, True)
    assert "float64" in flex_mod.flex_why_not(q.double(), False, False)
    with pytest.raises(ValueError, match=r"backend='flex'.*inference-only"):
        choose_backend(q, "flex", needs_grad=True)
    with pytest.raises(ValueError, match="inference-only"):
        hybrid_attention(q.requires_grad_(), q, q, 2, backend="flex")


@pytest.mark.slow
@pytest.mark.skipif(flex_mod.flex_why_not(torch.zeros(1, 1, 1, 16), False, False) is not None,
                    reason="compiled FlexAttention cannot run on this machine")
@pytest.mark.parametrize("causal", [False, True])
def test_flex_matches_dense(causal):
    """One compiled shape per rule; per-sequence G, padding, empty rows exactly zero."""
    args, kw = make_case(T=300, causal=causal)
    with torch.no_grad():
        got = hybrid_attention(*args, **kw, backend="flex")
        inplace = flex_mod.flex_hybrid_attention(*args, **kw, layout="in_place")
    want = dense_attention(*args, **kw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inplace, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1, :, -25:], torch.zeros_like(got[1, :, -25:]))


# --------------------------------------------------------------------------- triton
def test_triton_why_not_without_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from tutor.attention.hybrid import BACKENDS
    q = torch.randn(1, 1, 8, 16)
    reason = BACKENDS["triton"].why_not(q, False, False)
    assert reason is not None and ("CUDA" in reason or "not installed" in reason)
    if HAS_TRITON:
        assert BACKENDS["triton"].why_not(q, True, False) == reason          # gradients do not exclude it
    with pytest.raises(ValueError, match=r"backend='triton'"):
        hybrid_attention(q, q, q, 2, backend="triton")


TRITON_SCRIPT = textwrap.dedent("""
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "attention"))
    from test_backends import make_case
    from tutor.attention import dense_attention, hybrid_attention
    from tutor.attention.hybrid import auto_order, BACKENDS
    results = {}
    for name, (T, w, causal, dtype) in {"globals+padding": (100, 5, False, torch.float32),
                                        "causal": (100, 5, True, torch.float32),
                                        "wide window": (70, 40, False, torch.float32),
                                        "float16": (64, 3, False, torch.float16)}.items():
        args, kw = make_case(B=2, H=2, T=T, Dh=16 if dtype == torch.float32 else 24, window=w,
                             causal=causal, dtype=dtype)
        out = hybrid_attention(*args, **kw, backend="triton")
        want = dense_attention(*args, **kw)
        results[name] = [str(out.dtype), (out.float() - want.float()).abs().max().item(),
                         bool(torch.equal(out[1, :, -25:], torch.zeros_like(out[1, :, -25:])))]
    q = torch.randn(1, 1, 8, 16, requires_grad=True)
    results["grad"] = BACKENDS["triton"].why_not(q, True, False)
    print(json.dumps(results))
""")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")
def test_triton_kernel_under_interpreter():
    """The kernel, run by Triton's CPU interpreter on small shapes (bfloat16 excluded: the
    Triton 3.x interpreter computes bfloat16 tl.dot wrongly, a limitation of the interpreter)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(ROOT)], capture_output=True, text=True,
                         env=env, timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("globals+padding", "causal", "wide window"):
        dtype, err, zero_rows = results[name]
        assert dtype == "torch.float32" and err < 1e-5 and zero_rows, (name, results[name])
    dtype, err, zero_rows = results["float16"]
    assert dtype == "torch.float16" and err < 2e-3 and zero_rows, results["float16"]
    assert results["grad"] is None                                         # it trains (tests/attention/test_triton_backward.py)


# --------------------------------------------------------------------------- auto
def test_auto_on_cpu_is_blocked():
    small = torch.randn(1, 2, 64, 16)
    big = torch.empty(1, 4, 16384, 64)
    for q in (small, big, big.half()):
        assert choose_backend(q).name == "blocked"                             # measured fastest on CPU
        assert choose_backend(q, needs_grad=True).name == "blocked"
    assert hybrid_mod.auto_order(small, False) == ("blocked",)


def test_auto_order_on_cuda():
    class FakeQ:                                     # only .device is read by auto_order
        device = torch.device("cuda")
    assert hybrid_mod.auto_order(FakeQ(), False) == ("triton", "blocked", "flex")   # docs/benchmarks/gpu.md
    assert hybrid_mod.auto_order(FakeQ(), True) == ("triton", "flex", "blocked")


def test_auto_skips_backends_that_cannot_run(monkeypatch):
    monkeypatch.setattr(hybrid_mod, "auto_order", lambda q, needs_grad: ("flex", "blocked"))  # pretend flex came first
    q = torch.randn(1, 2, 64, 16)
    flex_ok = flex_mod.flex_why_not(q, False, False) is None
    assert choose_backend(q).name == ("flex" if flex_ok else "blocked")
    assert choose_backend(q, needs_grad=True).name == "blocked"              # CPU flex: no backward
    assert choose_backend(q, return_weights=True).name == "blocked"
    assert choose_backend(q, dropout=True).name == "blocked"
    assert choose_backend(q.double()).name == "blocked"                      # flex: no float64


def test_auto_falls_back_to_blocked_when_a_backend_breaks(monkeypatch):
    """The fallback is visible: one warning, the state in broken_backends(), a reset that forgets it."""
    import warnings
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(hybrid_mod, "auto_order", lambda q, needs_grad: ("flex", "blocked"))
    monkeypatch.setitem(hybrid_mod.BACKENDS, "flex", hybrid_mod.Backend("flex", broken, lambda *a: None))
    monkeypatch.setattr(hybrid_mod, "_broken", {})
    args, kw = make_case(T=40)
    with pytest.warns(RuntimeWarning, match="'flex' failed.*no compiler here.*broken_backends"):
        out = hybrid_attention(*args, **kw)
    torch.testing.assert_close(out, dense_attention(*args, **kw), atol=1e-5, rtol=1e-5)
    assert hybrid_mod.broken_backends() == {"flex": "RuntimeError: no compiler here"}
    assert choose_backend(args[0]).name == "blocked"                         # not tried again
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                      # said once, not at every call
        torch.testing.assert_close(hybrid_attention(*args, **kw), out, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="no compiler"):                  # named: no silent fallback
        hybrid_attention(*args, **kw, backend="flex")
    hybrid_mod.broken_backends()["flex"] = "edited copy"                    # a copy: the state stays ours
    assert hybrid_mod.broken_backends()["flex"] == "RuntimeError: no compiler here"
    hybrid_mod.reset_broken_backends()
    assert hybrid_mod.broken_backends() == {} and choose_backend(args[0]).name == "flex"
    with pytest.warns(RuntimeWarning, match="'flex' failed"):               # tried again, fails again
        hybrid_attention(*args, **kw)
    hybrid_mod.reset_broken_backends("flex", "triton")                      # by name; unknown names are fine
    assert hybrid_mod.broken_backends() == {}
