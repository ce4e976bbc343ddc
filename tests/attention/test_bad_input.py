"""SPEC.md "Bad input": a TypeError/ValueError that names the argument and shows what it got.

Every case runs against every implementation (and the dispatcher), so no implementation can skip
a check or fail with a bare shape error from inside a matmul.
"""
from __future__ import annotations

import re

import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import (HybridSparseAttention, dense_attention, hybrid_attention, looped_attention,
                             sparse_attention, unfold_attention)
from tutor.attention.blocked import blocked_hybrid_attention

pytestmark = pytest.mark.usefixtures("single_thread")

B, H, T, Dh = 2, 2, 5, 4

IMPLS = {
    "dense": dense_attention,
    "looped": looped_attention,
    "unfold": unfold_attention,
    "hybrid": hybrid_attention,
    "hybrid(blocked)": lambda *a, **kw: hybrid_attention(*a, **kw, backend="blocked"),
    "blocked": blocked_hybrid_attention,
    **{f"sparse({i})": (lambda i: lambda *a, **kw: sparse_attention(*a, **kw, impl=i))(i)
       for i in ("dense", "looped", "unfold", "hybrid")},
}


def good():
    """Valid arguments: q, k, v (B, H, T, Dh) float32, window 1, (B, T) bool masks."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, 0] = True
    return dict(q=q, k=k, v=v, window=1, global_mask=gm, key_padding_mask=torch.zeros(B, T, dtype=torch.bool))


def shape(*s):
    return re.escape(str(tuple(s)))


def bool_(*s, device="cpu"):
    return torch.zeros(*s, dtype=torch.bool, device=device)


# (label, overrides of good(), exception type, regex the message must match)
CASES = [
    # q, k, v: kind, rank, shape agreement
    ("q not a tensor", dict(q=[[1.0]]), TypeError, r"\bq\b.*list"),
    ("v not a tensor", dict(v=None), TypeError, r"\bv\b.*NoneType"),
    ("q rank 3", dict(q=torch.randn(B, T, Dh)), ValueError, r"\bq\b.*" + shape(B, T, Dh)),
    ("k rank 5", dict(k=torch.randn(B, H, T, Dh, 1)), ValueError, r"\bk\b.*" + shape(B, H, T, Dh, 1)),
    ("v rank 2", dict(v=torch.randn(T, Dh)), ValueError, r"\bv\b.*" + shape(T, Dh)),
    ("k other B", dict(k=torch.randn(B + 1, H, T, Dh)), ValueError, r"\bk\b.*" + shape(B + 1, H, T, Dh)),
    ("k other H", dict(k=torch.randn(B, H + 1, T, Dh)), ValueError, r"\bk\b.*" + shape(B, H + 1, T, Dh)),
    ("k other T", dict(k=torch.randn(B, H, T + 2, Dh)), ValueError, r"\bk\b.*" + shape(B, H, T + 2, Dh)),
    ("k other Dh", dict(k=torch.randn(B, H, T, Dh + 1)), ValueError, r"\bk\b.*" + shape(B, H, T, Dh + 1)),
    ("v other B", dict(v=torch.randn(1, H, T, Dh)), ValueError, r"\bv\b.*" + shape(1, H, T, Dh)),
    ("v other T", dict(v=torch.randn(B, H, T - 1, Dh)), ValueError, r"\bv\b.*" + shape(B, H, T - 1, Dh)),
    ("v other Dh", dict(v=torch.randn(B, H, T, Dh + 3)), ValueError, r"\bv\b.*" + shape(B, H, T, Dh + 3)),
    ("T = 0", dict(q=torch.randn(B, H, 0, Dh), k=torch.randn(B, H, 0, Dh), v=torch.randn(B, H, 0, Dh)),
     ValueError, r"\bq\b.*" + shape(B, H, 0, Dh)),
    # dtypes and devices
    ("k float64, q float32", dict(k=torch.randn(B, H, T, Dh, dtype=torch.float64)), TypeError,
     r"\bk\b.*float64"),
    ("v float16, q float32", dict(v=torch.randn(B, H, T, Dh).half()), TypeError, r"\bv\b.*float16"),
    ("q int64", dict(q=torch.ones(B, H, T, Dh, dtype=torch.int64)), TypeError, r"\bq\b.*int64"),
    ("all int32", dict(q=torch.ones(B, H, T, Dh, dtype=torch.int32), k=torch.ones(B, H, T, Dh, dtype=torch.int32),
                       v=torch.ones(B, H, T, Dh, dtype=torch.int32)), TypeError, r"\bq\b.*int32"),
    ("k bool", dict(k=torch.ones(B, H, T, Dh, dtype=torch.bool)), TypeError, r"\bk\b.*bool"),
    ("v complex", dict(v=torch.ones(B, H, T, Dh, dtype=torch.complex64)), TypeError, r"\bv\b.*complex64"),
    ("k on meta", dict(k=torch.randn(B, H, T, Dh, device="meta")), ValueError, r"\bk\b.*meta"),
    ("v on meta", dict(v=torch.randn(B, H, T, Dh, device="meta")), ValueError, r"\bv\b.*meta"),
    # window
    ("window -1", dict(window=-1), ValueError, r"window.*-1"),
    ("window 1.5", dict(window=1.5), TypeError, r"window.*float"),
    ("window 2.0", dict(window=2.0), TypeError, r"window.*float"),
    ("window True", dict(window=True), TypeError, r"window.*bool"),
    ("window '2'", dict(window="2"), TypeError, r"window.*str"),
    ("window None", dict(window=None), TypeError, r"window.*NoneType"),
    ("window float tensor", dict(window=torch.tensor(2.0)), TypeError, r"window.*Tensor"),
    # flag masks
    *[case for name in ("global_mask", "key_padding_mask") for case in [
        (f"{name} float", {name: torch.zeros(B, T)}, TypeError, name + r".*float32"),
        (f"{name} uint8", {name: torch.zeros(B, T, dtype=torch.uint8)}, TypeError, name + r".*uint8"),
        (f"{name} int64", {name: torch.zeros(B, T, dtype=torch.int64)}, TypeError, name + r".*int64"),
        (f"{name} list", {name: [[False] * T] * B}, TypeError, name + r".*list"),
        (f"{name} (B, T+1)", {name: bool_(B, T + 1)}, ValueError, name + r".*" + shape(B, T + 1)),
        (f"{name} (B, T-1)", {name: bool_(B, T - 1)}, ValueError, name + r".*" + shape(B, T - 1)),
        (f"{name} (1, T) no broadcast", {name: bool_(1, T)}, ValueError, name + r".*" + shape(1, T)),
        (f"{name} (B+1, T)", {name: bool_(B + 1, T)}, ValueError, name + r".*" + shape(B + 1, T)),
        (f"{name} (T,)", {name: bool_(T)}, ValueError, name + r".*" + shape(T)),
        (f"{name} (B, T, 1)", {name: bool_(B, T, 1)}, ValueError, name + r".*" + shape(B, T, 1)),
        (f"{name} (T, B) transposed", {name: bool_(T, B)}, ValueError, name + r".*" + shape(T, B)),
        (f"{name} on meta", {name: bool_(B, T, device="meta")}, ValueError, name + r".*meta"),
    ]],
]


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("label, overrides, exc, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(impl, label, overrides, exc, pattern):
    args = {**good(), **overrides}
    with pytest.raises(exc, match=pattern):
        IMPLS[impl](args["q"], args["k"], args["v"], args["window"], args["global_mask"], args["key_padding_mask"])


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("scale, exc", [("0.5", TypeError), (True, TypeError), (float("inf"), ValueError),
                                        (float("nan"), ValueError), ([0.5], TypeError)])
def test_bad_scale(impl, scale, exc):
    a = good()
    with pytest.raises(exc, match="scale"):
        IMPLS[impl](a["q"], a["k"], a["v"], 1, scale=scale)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_good_input_passes(impl):
    """The baseline of every bad case is valid, so each failure above is due to its one change."""
    a = good()
    out = IMPLS[impl](a["q"], a["k"], a["v"], a["window"], a["global_mask"], a["key_padding_mask"], scale=0.5)
    assert out.shape == (B, H, T, Dh) and torch.isfinite(out).all()


def test_unknown_impl_and_backend():
    a = good()
    with pytest.raises(ValueError, match=r"impl.*'flash'"):
        sparse_attention(a["q"], a["k"], a["v"], 1, impl="flash")
    with pytest.raises(ValueError, match=r"backend.*'nope'"):
        hybrid_attention(a["q"], a["k"], a["v"], 1, backend="nope")
    with pytest.raises(ValueError, match=r"backend.*'nope'"):
        sparse_attention(a["q"], a["k"], a["v"], 1, impl="hybrid", backend="nope")
    with pytest.raises(TypeError, match=r"backend.*int"):
        hybrid_attention(a["q"], a["k"], a["v"], 1, backend=3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="triton can run where CUDA is available")
def test_unavailable_backend_is_a_clear_error():
    a = good()
    with pytest.raises(ValueError, match=r"backend.*'triton'"):
        hybrid_attention(a["q"], a["k"], a["v"], 1, backend="triton")


# --------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(dim=10, num_heads=3, window=1), ValueError, r"dim.*num_heads.*10.*3"),
    (dict(dim=8, num_heads=3, window=1), ValueError, r"dim.*num_heads.*8.*3"),
    (dict(dim=0, num_heads=1, window=1), ValueError, r"\bdim\b.*0"),
    (dict(dim=8.0, num_heads=2, window=1), (TypeError, ValueError), r"\bdim\b.*8\.0"),
    (dict(dim=8, num_heads=0, window=1), ValueError, r"num_heads.*0"),
    (dict(dim=8, num_heads=True, window=1), (TypeError, ValueError), r"num_heads.*True"),
    (dict(dim=8, num_heads=2, window=-2), ValueError, r"window.*-2"),
    (dict(dim=8, num_heads=2, window=1.0), TypeError, r"window.*float"),
    (dict(dim=8, num_heads=2, window=1, impl="fast"), ValueError, r"impl.*'fast'"),
    (dict(dim=8, num_heads=2, window=1, dropout=1.5), ValueError, r"dropout.*1\.5"),
    (dict(dim=8, num_heads=2, window=1, dropout=-0.1), ValueError, r"dropout.*-0\.1"),
])
def test_layer_bad_construction(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        HybridSparseAttention(**kwargs)


@pytest.mark.parametrize("impl", ["dense", "looped", "unfold", "hybrid"])
@pytest.mark.parametrize("label, call, exc, pattern", [
    ("x not a tensor", lambda: dict(x=[[0.0] * 8]), TypeError, r"\bx\b.*list"),
    ("x rank 2", lambda: dict(x=torch.randn(T, 8)), ValueError, r"\bx\b.*" + shape(T, 8)),
    ("x rank 4", lambda: dict(x=torch.randn(B, H, T, 4)), ValueError, r"\bx\b.*" + shape(B, H, T, 4)),
    ("x wrong dim", lambda: dict(x=torch.randn(B, T, 6)), ValueError, r"\bx\b.*" + shape(B, T, 6)),
    ("x float64", lambda: dict(x=torch.randn(B, T, 8, dtype=torch.float64)), TypeError, r"\bx\b.*float64"),
    ("x int64", lambda: dict(x=torch.ones(B, T, 8, dtype=torch.int64)), TypeError, r"\bx\b.*int64"),
    ("x on meta", lambda: dict(x=torch.randn(B, T, 8, device="meta")), ValueError, r"\bx\b.*meta"),
    ("global_mask shape", lambda: dict(global_mask=bool_(B, T + 1)), ValueError, r"global_mask.*" + shape(B, T + 1)),
    ("global_mask float", lambda: dict(global_mask=torch.zeros(B, T)), TypeError, r"global_mask.*float32"),
    ("key_padding_mask shape", lambda: dict(key_padding_mask=bool_(1, T)), ValueError,
     r"key_padding_mask.*" + shape(1, T)),
    ("key_padding_mask int", lambda: dict(key_padding_mask=torch.zeros(B, T, dtype=torch.int64)), TypeError,
     r"key_padding_mask.*int64"),
])
def test_layer_bad_forward(impl, label, call, exc, pattern):
    torch.manual_seed(0)
    layer = HybridSparseAttention(8, 2, 1, impl=impl)
    kwargs = {"x": torch.randn(B, T, 8), **call()}
    with pytest.raises(exc, match=pattern):
        layer(**kwargs)
