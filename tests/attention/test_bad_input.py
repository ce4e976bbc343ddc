"""docs/spec.md "Bad input": every public entry point goes through the one door.

The validators themselves meet the full range of odd values in tests/test_arguments.py. Here every
public function that takes an argument (the attention entry points, the layer, the distributed
local check, the masks, the costs, the plots) gets the same odd values of it and must give the
*same verdict as the validator*: it runs where the validator accepts (``np.int64(2)``, a 0-d int
tensor), and raises the validator's exception type, naming the argument, where it refuses
(``True``, ``2.0``, ``-1``). One bad value per argument is enough to prove an entry point asks
the validator; which values are refused is the validators' business.
"""
from __future__ import annotations

import re
from functools import partial

import matplotlib
import numpy as np
import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor import costs, masks, patterns
from tutor.arguments import (check_bool_mask, check_dilation, check_flag, check_int, check_probability, check_qkv,
                             check_scale, check_window)
from tutor.attention import (HybridSparseAttention, dense_attention, hybrid_attention, looped_attention,
                             sparse_attention, unfold_attention)
from tutor.attention.blocked import blocked_hybrid_attention
from tutor.attention.flex import flex_hybrid_attention
from tutor.attention.triton_kernel import triton_hybrid_attention
from tutor.conventions.windows import to_longformer
from tutor.distributed.layout import check_local
from tutor.viz.blocks import plot_query_blocks
from tutor.viz.unfold import plot_score_slots, plot_unfold, slot_kinds

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("single_thread")

B, H, T, Dh = 2, 2, 6, 4
DIM = H * Dh


def inputs():
    """Valid arguments: q, k, v (B, H, T, Dh) float32, (B, T) bool masks with a global token and padding."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, 0] = True
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, -2:] = True
    return dict(q=q, k=k, v=v, window=1, global_mask=gm, key_padding_mask=kpm)


# --------------------------------------------------------------------------- the entry points
def attention(fn, *, takes=(), compiles=False, **fixed):
    """An attention entry point ``fn(q, k, v, window, global_mask, key_padding_mask, **kw)``.

    ``takes``: the optional keywords it accepts beyond causal, scale, return_weights.
    ``compiles``: it needs a compiler or a GPU to run (flex, triton): only its refusals are tested.
    """
    def run(**over):
        a = {**inputs(), **over}
        kw = {n: a[n] for n in ("causal", "scale", "return_weights", *takes) if n in a}
        with torch.no_grad():
            return fn(a["q"], a["k"], a["v"], a["window"], a["global_mask"], a["key_padding_mask"], **kw, **fixed)
    run.args = {"q", "window", "global_mask", "key_padding_mask", "causal", "scale", "return_weights", *takes}
    run.compiles = compiles
    return run


def entry(fn, args, compiles=False):
    fn.args, fn.compiles = set(args), compiles
    return fn


def layer_init(**over):
    return HybridSparseAttention(DIM, H, over.get("window", 1), causal=over.get("causal", False),
                                 dropout=over.get("dropout_p", 0.0))


def layer_forward(**over):
    a = {**inputs(), **over}
    layer = HybridSparseAttention(DIM, H, 1)
    return layer(torch.randn(B, T, DIM), a["global_mask"], a["key_padding_mask"],
                 return_weights=over.get("return_weights", False))


def distributed_local_check(**over):
    """What every rank of sequence_parallel_attention checks before the one exchange."""
    a = {**inputs(), **over}
    return check_local(a["q"], a["k"], a["v"], a["window"], a["global_mask"], a["key_padding_mask"],
                       a.get("causal", False), a.get("scale"))


ENTRIES = {
    "dense_attention": attention(dense_attention, takes=("dropout_p", "dilation")),
    "looped_attention": attention(looped_attention),
    "unfold_attention": attention(unfold_attention, takes=("dropout_p",)),
    "hybrid_attention": attention(hybrid_attention, takes=("dropout_p", "dilation")),
    "hybrid_attention(blocked)": attention(hybrid_attention, takes=("dropout_p", "dilation"), backend="blocked"),
    **{f"sparse_attention({impl})": attention(sparse_attention, takes=takes, impl=impl)
       for impl, takes in (("dense", ("dropout_p", "dilation")), ("looped", ()), ("unfold", ("dropout_p",)),
                           ("hybrid", ("dropout_p", "dilation")))},
    "blocked_hybrid_attention": attention(blocked_hybrid_attention, takes=("dropout_p", "dilation")),
    "flex_hybrid_attention": attention(flex_hybrid_attention, takes=("dilation",), compiles=True),
    "triton_hybrid_attention": attention(triton_hybrid_attention, compiles=True),
    "HybridSparseAttention()": entry(layer_init, ("window", "causal", "dropout_p")),
    "HybridSparseAttention.forward": entry(layer_forward, ("global_mask", "key_padding_mask", "return_weights")),
    "sequence_parallel_attention (local check)": entry(
        distributed_local_check, ("q", "window", "global_mask", "key_padding_mask", "causal", "scale")),
    "hybrid_mask": entry(lambda **o: masks.hybrid_mask(
        o.get("T", T), o.get("window", 1), o.get("global_mask", inputs()["global_mask"]), o.get("key_padding_mask"),
        causal=o.get("causal", False), dilation=o.get("dilation", 1)),
        ("T", "window", "global_mask", "key_padding_mask", "causal", "dilation")),
    "hybrid_mask_mod": entry(lambda **o: masks.hybrid_mask_mod(o.get("window", 1), causal=o.get("causal", False),
                                                               dilation=o.get("dilation", 1)),
                             ("window", "causal", "dilation")),
    "generate_local_window": entry(lambda **o: masks.generate_local_window(o.get("window", 1)), ("window",)),
    "generate_causal_window": entry(lambda **o: masks.generate_causal_window(o.get("window", 1)), ("window",)),
    "generate_dilated_window": entry(lambda **o: masks.generate_dilated_window(o.get("window", 1),
                                                                               o.get("dilation", 1)),
                                     ("window", "dilation")),
    "pattern_mask": entry(lambda **o: patterns.pattern_mask(o.get("T", T), o.get("window", 1), [0],
                                                            causal=o.get("causal", False),
                                                            dilation=o.get("dilation", 1)),
                          ("T", "window", "causal", "dilation")),
    "hybrid_pairs": entry(lambda **o: costs.hybrid_pairs(o.get("T", T), o.get("window", 1), [0],
                                                         causal=o.get("causal", False)), ("T", "window", "causal")),
    "attention_cost": entry(lambda **o: costs.attention_cost("hybrid", o.get("T", T), o.get("window", 1),
                                                             causal=o.get("causal", False)),
                            ("T", "window", "causal")),
    "count_allowed": entry(lambda **o: costs.count_allowed(masks.generate_causal(), o.get("T", T)), ("T",)),
    "to_longformer": entry(lambda **o: to_longformer(o.get("window", 1)), ("window",)),
    "plot_unfold": entry(lambda **o: plot_unfold(o.get("T", T), o.get("window", 1)), ("T", "window")),
    "slot_kinds": entry(lambda **o: slot_kinds(o.get("window", 1), o.get("global_mask", inputs()["global_mask"]),
                                               o.get("key_padding_mask")),
                        ("window", "global_mask", "key_padding_mask")),
    "plot_score_slots": entry(lambda **o: plot_score_slots(o.get("window", 1), inputs()["global_mask"]), ("window",)),
    "plot_query_blocks": entry(lambda **o: plot_query_blocks(o.get("T", T), o.get("window", 1), 2, [0],
                                                             causal=o.get("causal", False)),
                               ("T", "window", "causal")),
}


# --------------------------------------------------------------------------- the values and their judges
def _mask_judge(name):
    return lambda m: check_bool_mask(name, m, B, T, torch.device("cpu"))


JUDGES = {
    "window": check_window,
    "T": partial(check_int, "T", minimum=1),
    "dilation": check_dilation,
    "causal": partial(check_flag, "causal"),
    "return_weights": partial(check_flag, "return_weights"),
    "scale": check_scale,
    "dropout_p": partial(check_probability, "dropout_p"),
    "global_mask": _mask_judge("global_mask"),
    "key_padding_mask": _mask_judge("key_padding_mask"),
    "q": lambda q: check_qkv(q, *(inputs()[n] for n in ("k", "v"))),
}

#: per argument: the odd values every entry point taking it must judge as its validator does
VALUES = {
    "window": [np.int64(2), torch.tensor(2), True, 2.0, "2", torch.tensor([2]), -1],
    "T": [np.int64(6), 0, 6.0, True],
    "dilation": [np.int64(2), 0, 2.0],
    "causal": [np.bool_(True), "no", 1],
    "return_weights": [1, None],
    "scale": [0, -0.5, True, float("nan"), float("inf"), "0.5"],
    "dropout_p": [1.0, "0.1"],
    "global_mask": [torch.zeros(B, T), torch.zeros(T, dtype=torch.bool)],
    "key_padding_mask": [torch.zeros(B, T, dtype=torch.int64), torch.zeros(1, T, dtype=torch.bool)],
    "q": [[[1.0]], torch.randn(B, H, T, Dh + 1)],
}

# the layer calls its dropout probability ``dropout``
ALIASES = {("HybridSparseAttention()", "dropout_p"): "dropout"}


def verdict(fn):
    """None when ``fn()`` runs, else the type and message of its TypeError / ValueError."""
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return None


CASES = [(name, arg) for name, fn in ENTRIES.items() for arg in sorted(fn.args)]


@pytest.mark.parametrize("name, arg", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_every_entry_judges_like_the_validator(name, arg):
    fn = ENTRIES[name]
    for value in VALUES[arg]:
        judged = verdict(lambda: JUDGES[arg](value))
        if judged is None and fn.compiles:
            continue                   # accepted: running it needs a compiler or a GPU (test_backends.py)
        got = verdict(lambda: fn(**{arg: value}))
        if judged is None:
            assert got is None, f"{name} refused {arg}={value!r}, which the validator accepts: {got}"
        else:
            assert got is not None, f"{name} accepted {arg}={value!r}; the validator says {judged}"
            assert got[0] is judged[0], f"{name}, {arg}={value!r}: {got} but the validator raises {judged}"
            word = ALIASES.get((name, arg), arg)
            assert re.search(rf"\b{word}\b", got[1]), f"{name}: the message does not name {word!r}: {got[1]}"


@pytest.mark.parametrize("name", list(ENTRIES))
def test_the_baseline_runs(name):
    """Each bad case above changes one argument of a call that runs."""
    if ENTRIES[name].compiles:
        pytest.skip("needs a compiler or a GPU")
    ENTRIES[name]()


# --------------------------------------------------------------------------- what the door does not see
def test_unknown_impl_and_backend():
    a = inputs()
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
    a = inputs()
    with pytest.raises(ValueError, match=r"backend.*'triton'"):
        hybrid_attention(a["q"], a["k"], a["v"], 1, backend="triton")


# --------------------------------------------------------------------------- the layer's own arguments
@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(dim=10, num_heads=3, window=1), ValueError, r"dim.*num_heads.*10.*3"),
    (dict(dim=8, num_heads=3, window=1), ValueError, r"dim.*num_heads.*8.*3"),
    (dict(dim=0, num_heads=1, window=1), ValueError, r"\bdim\b.*0"),
    (dict(dim=8.0, num_heads=2, window=1), TypeError, r"\bdim\b.*8\.0"),
    (dict(dim=8, num_heads=0, window=1), ValueError, r"num_heads.*0"),
    (dict(dim=8, num_heads=True, window=1), TypeError, r"num_heads.*True"),
    (dict(dim=8, num_heads=2, window=-2), ValueError, r"window.*-2"),
    (dict(dim=8, num_heads=2, window=1.0), TypeError, r"window.*float"),
    (dict(dim=8, num_heads=2, window=1, impl="fast"), ValueError, r"impl.*'fast'"),
    (dict(dim=8, num_heads=2, window=1, dropout=1.5), ValueError, r"dropout.*1\.5"),
    (dict(dim=8, num_heads=2, window=1, dropout=-0.1), ValueError, r"dropout.*-0\.1"),
    (dict(dim=8, num_heads=2, window=1, bias="yes"), TypeError, r"bias.*str"),
    (dict(dim=8, num_heads=2, window=1, global_projections=1), TypeError, r"global_projections.*int"),
    (dict(dim=8, num_heads=2, window=1, backend="fast"), ValueError, r"backend.*'fast'"),
])
def test_layer_bad_construction(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        HybridSparseAttention(**kwargs)


@pytest.mark.parametrize("label, x, exc, pattern", [
    ("x not a tensor", [[0.0] * DIM], TypeError, r"\bx\b.*list"),
    ("x rank 2", torch.randn(T, DIM), ValueError, r"\bx\b.*" + re.escape(str((T, DIM)))),
    ("x rank 4", torch.randn(B, H, T, 4), ValueError, r"\bx\b.*" + re.escape(str((B, H, T, 4)))),
    ("x wrong dim", torch.randn(B, T, 6), ValueError, r"\bx\b.*" + re.escape(str((B, T, 6)))),
    ("x float64", torch.randn(B, T, DIM, dtype=torch.float64), TypeError, r"\bx\b.*float64"),
    ("x int64", torch.ones(B, T, DIM, dtype=torch.int64), TypeError, r"\bx\b.*int64"),
    ("x on meta", torch.randn(B, T, DIM, device="meta"), ValueError, r"\bx\b.*meta"),
])
def test_layer_bad_x(label, x, exc, pattern):
    with pytest.raises(exc, match=pattern):
        HybridSparseAttention(DIM, H, 1)(x)


@pytest.mark.parametrize("impl", ["dense", "unfold", "hybrid"])
def test_meta_tensors_get_a_clear_error_not_a_traceback(impl):
    """Issue 22, finding 22: the layer (and hybrid attention) on the meta device raised torch's
    'Tensor.item() cannot be called on meta tensors' from deep inside."""
    layer = HybridSparseAttention(8, 2, 2, impl=impl).to("meta")
    with pytest.raises(ValueError, match="meta device"):
        layer(torch.randn(1, 4, 8, device="meta"))
    q = torch.randn(1, 2, 4, 4, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        sparse_attention(q, q, q, 1, impl=impl)
