"""The blocked backend's memory-lean backward pass (issue 13): gradients equal dense, lean storage.

``blocked_hybrid_attention(..., backward="lean")`` (the default whenever a gradient is needed)
saves q, k, v, the output and one log-sum-exp per row and recomputes every chunk in the backward
pass. Its gradients must equal autograd through ``dense_attention`` on every shape the forward
tests draw (T = 1, window 0 and >= T, every kind of global and padding mask, causal, dilation,
a custom scale, many chunks), stay finite and free of padding's NaN, and be close to float32 in
float16 and bfloat16. Memory itself is measured by ``python -m tutor bench --mode train``, not
here; here we count the bytes autograd saves, which is what the lean path is about.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tutor.attention.blocked as blocked_mod
from strategies import cases, single_thread  # noqa: F401 (fixture)
from tutor.attention import HybridSparseAttention, dense_attention, hybrid_attention
from tutor.attention.blocked import blocked_hybrid_attention
from tutor.bench import saved_bytes

pytestmark = pytest.mark.usefixtures("single_thread")


def lean(*args, **kwargs):
    return blocked_hybrid_attention(*args, **kwargs, backward="lean")


def is_lean(out) -> bool:
    return type(out.grad_fn).__name__.startswith("LeanBlockedAttention")


def graph_has_lean(out) -> bool:
    """Whether the autograd graph behind ``out`` contains a lean blocked node."""
    todo, seen = [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith("LeanBlockedAttention"):
            return True
        todo.extend(n for n, _ in node.next_functions)
    return False


def grads(fn, q, k, v, *args, upstream=None, **kwargs):
    """(out, dq, dk, dv) of ``(fn(q, k, v, ...) * upstream).sum()`` on fresh leaves."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, *args, **kwargs)
    upstream = torch.ones_like(out) if upstream is None else upstream.to(out.dtype)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), upstream)
    return out, dq, dk, dv


def qkv(B=2, H=2, T=9, Dh=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, Dh, generator=g).to(dtype) for _ in range(3))


def masks(B=2, T=9):
    """Globals that differ per sequence (one inside a window, one at the end); tail padding over a global."""
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[0, [1, T - 1]] = True
    gm[B - 1, T // 2] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[B - 1, T - 3:] = True
    return gm, kpm


# --------------------------------------------------------------------------- gradcheck
GRADCHECK = {  # window, masks, causal, dilation, block_size
    "local": (1, False, False, 1, None),
    "local causal": (2, False, True, 1, None),
    "global+padding": (1, True, False, 1, None),
    "global+padding causal": (2, True, True, 1, 2),
    "window>=T": (20, True, False, 1, None),
    "window 0, blocks of 1": (0, True, False, 1, 1),
    "dilation 2, blocks of 3": (2, True, False, 2, 3),
}


@pytest.mark.parametrize("setup", list(GRADCHECK))
def test_gradcheck_float64(setup):
    window, with_masks, causal, dilation, block_size = GRADCHECK[setup]
    gm, kpm = masks(T=7) if with_masks else (None, None)

    def f(q, k, v):
        out = lean(q, k, v, window, gm, kpm, causal=causal, dilation=dilation, block_size=block_size)
        assert is_lean(out)
        return out

    inputs = tuple(t.requires_grad_() for t in qkv(T=7, Dh=2))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------- equal to dense, drawn shapes
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(max_T=33), dilation=st.sampled_from([1, 1, 2, 3]),
       block_size=st.sampled_from([None, 1, 2, 5, 8]), chunk=st.sampled_from([1, 40, 1 << 20]),
       seed=st.integers(0, 2 ** 16))
def test_gradients_equal_dense(case, dilation, block_size, chunk, seed):
    """float64; many chunks (``chunk`` score elements per chunk) or one; every mask kind of strategies.py."""
    c = case.cast(torch.float64)
    upstream = torch.randn(c.q.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    want = grads(dense_attention, c.q, c.k, c.v, *c.args[3:], upstream=upstream, dilation=dilation, **c.kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocked_mod, "CHUNK_ELEMENTS", chunk)
        got = grads(lean, c.q, c.k, c.v, *c.args[3:], upstream=upstream, dilation=dilation,
                    block_size=block_size, **c.kwargs)
    assert is_lean(got[0])
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-8, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("causal", [False, True])
def test_lean_equals_plain_autograd(causal):
    """The two backward passes of one forward: same gradients (float32, several chunks)."""
    q, k, v = qkv(2, 3, 150, 8, torch.float32, seed=4)
    gm, kpm = masks(2, 150)
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blocked_mod, "CHUNK_ELEMENTS", 5000)
        a = grads(blocked_hybrid_attention, q, k, v, 6, gm, kpm, causal=causal, upstream=upstream, backward="lean")
        b = grads(blocked_hybrid_attention, q, k, v, 6, gm, kpm, causal=causal, upstream=upstream,
                  backward="autograd")
    assert is_lean(a[0]) and not is_lean(b[0])
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=2e-6, rtol=1e-5)


# --------------------------------------------------------------------------- dtypes and NaN
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_half_precision_gradients_are_finite_and_close_to_float32(dtype, tol):
    q, k, v = qkv(2, 2, 70, 16, torch.float32, seed=1)
    gm, kpm = masks(2, 70)
    ref = grads(lean, q, k, v, 5, gm, kpm)
    got = grads(lean, q.to(dtype), k.to(dtype), v.to(dtype), 5, gm, kpm)
    for g, r in zip(got, ref):
        assert g.dtype == dtype and torch.isfinite(g).all()
        torch.testing.assert_close(g.float(), r, atol=tol, rtol=tol)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_no_nan_gradient_from_padding(causal, poison):
    """NaN/inf in padded q, k, v (one sequence fully padded): gradients finite, unchanged, zero there."""
    q, k, v = qkv(3, 2, 20, 4, torch.float32, seed=2)
    gm, kpm = torch.zeros(3, 20, dtype=torch.bool), torch.zeros(3, 20, dtype=torch.bool)
    gm[:, [0, 11]] = True
    kpm[0, 15:] = True
    kpm[1, :] = True                                            # a sequence that is all padding
    kpm[2, [0, 3]] = True                                       # padding over a global token
    clean = grads(lean, q, k, v, 3, gm, kpm, causal=causal)
    pad = kpm[:, None, :, None].expand_as(q)
    dirty = [t.masked_fill(pad, poison) for t in (q, k, v)]
    got = grads(lean, *dirty, 3, gm, kpm, causal=causal)
    for g, c in zip(got, clean):
        assert torch.isfinite(g).all()
        assert torch.equal(g, c)
        assert torch.equal(g[pad], torch.zeros_like(g[pad]))


# --------------------------------------------------------------------------- a long sequence, on a slice
def test_long_sequence_gradients_on_a_slice():
    """T = 32768: gradients of 64 local rows and one global row against float64 row references."""
    T, H, Dh, w = 32768, 2, 16, 32
    q, k, v = qkv(1, H, T, Dh, torch.float32, seed=3)
    globals_, pad_from = [5, 20000], T - 100
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, globals_] = True
    kpm = torch.zeros(1, T, dtype=torch.bool)
    kpm[0, pad_from:] = True
    rows = list(range(10000, 10064)) + [5]
    upstream = torch.zeros(1, H, T, Dh)
    upstream[:, :, rows] = torch.randn(1, H, len(rows), Dh, generator=torch.Generator().manual_seed(6))
    _, dq, dk, dv = grads(lean, q, k, v, w, gm, kpm, upstream=upstream)

    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    loss = 0
    for i in rows:                                              # each row: softmax over its allowed keys
        keys = range(T) if i in globals_ else sorted(set(range(i - w, i + w + 1)) | set(globals_))
        keys = torch.tensor([j for j in keys if j < pad_from])
        p = torch.softmax(kd[0, :, keys] @ qd[0, :, i, :, None] * Dh ** -0.5, dim=1)  # (H, n, 1)
        loss = loss + ((p * vd[0, :, keys]).sum(1) * upstream[0, :, i].double()).sum()
    want = torch.autograd.grad(loss, (qd, kd, vd))
    for g, r in zip((dq, dk, dv), want):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- which path runs, and what it keeps
def test_lean_saves_only_inputs_output_and_row_statistics():
    B, H, T, Dh = 1, 2, 2048, 16
    q, k, v = (t.requires_grad_() for t in qkv(B, H, T, Dh, torch.float32))
    gm, _ = masks(B, T)
    out = q.numel() * 4                                         # q, k, v themselves are not counted
    lean_bytes = saved_bytes(lambda q, k, v: lean(q, k, v, 16, gm), q, k, v)
    plain = saved_bytes(lambda q, k, v: blocked_hybrid_attention(q, k, v, 16, gm, backward="autograd"), q, k, v)
    assert lean_bytes <= out + 2 * B * H * (T + 64) * 4         # + the log-sum-exp of each row
    assert plain > 3 * lean_bytes                               # every chunk's scores and copies


def test_backends_that_train_on_cpu_use_the_lean_path():
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 40, 4, torch.float32))
    gm, kpm = masks(1, 40)
    for backend in ("blocked", "auto"):
        assert is_lean(hybrid_attention(q, k, v, 3, gm, kpm, backend=backend))
    layer = HybridSparseAttention(8, 2, 3)                      # notebook 06's layer trains through auto
    assert graph_has_lean(layer(torch.randn(2, 40, 8), global_mask=gm.expand(2, -1)).sum())
    with torch.no_grad():
        assert hybrid_attention(q, k, v, 3, gm, kpm).grad_fn is None


@pytest.mark.parametrize("kwargs", [dict(dropout_p=0.1), dict(return_weights=True), dict(backward="autograd")])
def test_dropout_weights_and_autograd_take_the_plain_path(kwargs):
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 12, 4, torch.float32))
    out = blocked_hybrid_attention(q, k, v, 2, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    assert out.grad_fn is not None and not is_lean(out)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_double_backward_raises_a_clear_error():
    q, k, v = (t.requires_grad_() for t in qkv(1, 1, 8, 2))
    out = lean(q, k, v, 2)
    (dq,) = torch.autograd.grad(out.pow(2).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dq.sum().backward()


@pytest.mark.parametrize("value", ["flash", "Lean", None, 1])
def test_bad_backward_names_the_argument(value):
    q, k, v = qkv(1, 1, 8, 2)
    with pytest.raises(ValueError, match="backward"):
        blocked_hybrid_attention(q, k, v, 2, backward=value)
