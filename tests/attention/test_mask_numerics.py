"""Numerics that respect the mask, in every implementation and backend (docs/spec.md, issue 11).

An output row may depend only on the keys it may attend. So, for every implementation:

* poisoning (NaN, +inf, -inf, +-1e30) the *key* of positions a row may not attend (outside its
  window, the future when causal, padding) and the key *and value* of every padded position
  leaves that row bit-identical (``torch.equal``) to the clean run;
* with a huge ``scale`` (1e35) or huge logits, in float32, float16 and bfloat16, no disallowed
  pair gets any weight: the weights (where an implementation returns them) are exactly 0 there,
  and a probe added to the values a row may not attend leaves the row bit-identical.

(A NaN in the *value* of an unpadded key outside a row's window may reach that row as ``0 * NaN``
inside a matrix product; docs/spec.md does not promise that and these tests do not poison it.)

The allowed pairs come from the brute-force rule in ``strategies.py``, not from ``tutor``.
FlexAttention compiles once per shape, dtype and rule (tens of seconds on 2 CPU cores), so its
cases keep one shape and rule per dtype and vary only the masks' contents and the poison; the
Triton kernel runs under Triton's CPU interpreter in a subprocess (TRITON_INTERPRET=1 must be
set before triton is imported), on a few cases.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from strategies import brute_allowed_tensor, single_thread  # noqa: F401 (fixture)
from tutor.attention import dense_attention, hybrid_attention, looped_attention, unfold_attention
from tutor.attention.flex import flex_why_not

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
FLEX_OK = flex_why_not(torch.zeros(1, 1, 1, 16), False, False) is None

POISONS = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30)
B, H, Dh = 2, 2, 8
FLEX_T, FLEX_W = 20, 3            # the one shape and window flex compiles for


def _backend(name):
    def run(*args, **kwargs):
        return hybrid_attention(*args, **kwargs, backend=name)
    return run


IMPLS = {"dense": dense_attention, "looped": looped_attention, "unfold": unfold_attention,
         "hybrid(blocked)": _backend("blocked"), "hybrid(flex)": _backend("flex"),
         "hybrid(triton)": _backend("triton")}
WEIGHTS = ("dense", "looped", "unfold", "hybrid(blocked)")          # can return_weights
CHEAP = ("dense", "looped", "unfold", "hybrid(blocked)")            # no compiler, no interpreter


@st.composite
def cases(draw, fixed: bool = False):
    """Masks, rule and poison for one test. ``fixed``: flex's single shape and rule.

    Returns a dict: T, window, causal, global_mask and key_padding_mask (B, T) bool, seed, the
    positions whose keys get poisoned (P) and the poison value.
    """
    T = FLEX_T if fixed else draw(st.integers(1, 24), label="T")
    window = FLEX_W if fixed else draw(st.sampled_from([0, 1, 2, 5, 40]), label="window")
    causal = False if fixed else draw(st.booleans(), label="causal")
    flags = st.lists(st.lists(st.booleans(), min_size=T, max_size=T), min_size=B, max_size=B)
    gm = torch.tensor(draw(flags, label="global"), dtype=torch.bool).reshape(B, T)
    kpm = torch.tensor(draw(flags, label="padding"), dtype=torch.bool).reshape(B, T)
    if fixed:                        # one real global token, so the global_first layout never changes
        gm[0, 0], kpm[0, 0] = True, False
    P = draw(st.lists(st.integers(0, T - 1), min_size=1, max_size=3, unique=True), label="P")
    return dict(T=T, window=window, causal=causal, global_mask=gm, key_padding_mask=kpm,
                seed=draw(st.integers(0, 2 ** 16), label="seed"), P=P,
                poison=draw(st.sampled_from(POISONS), label="poison"))


def tensors(case, dtype=torch.float32, logit_scale=1.0):
    g = torch.Generator().manual_seed(case["seed"])
    q, k, v = (torch.randn(B, H, case["T"], Dh, generator=g) for _ in range(3))
    return (q * logit_scale).to(dtype), (k * logit_scale).to(dtype), v.to(dtype)


def blind_rows(case) -> torch.Tensor:
    """(B, T) bool: rows that may attend none of the poisoned positions P."""
    allowed = brute_allowed_tensor(case["T"], case["window"], case["global_mask"], case["key_padding_mask"],
                                   case["causal"], B)                   # (B, T, T)
    return ~allowed[:, :, case["P"]].any(-1)


def run(impl, q, k, v, case, **kwargs):
    with torch.no_grad():
        return IMPLS[impl](q, k, v, case["window"], case["global_mask"], case["key_padding_mask"],
                           causal=case["causal"], **kwargs)


def poison_check(impl, case) -> None:
    """Poisoned keys at P and poisoned keys and values at padding: blind rows unchanged, bit for bit."""
    q, k, v = tensors(case)
    clean = run(impl, q, k, v, case)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, case["P"]] = case["poison"]
    pad = case["key_padding_mask"][:, None, :, None].expand_as(k)         # (B, H, T, Dh)
    k2[pad], v2[pad] = case["poison"], case["poison"]
    dirty = run(impl, q, k2, v2, case)
    rows = blind_rows(case)                                               # (B, T)
    assert torch.isfinite(clean).all()
    got, want = dirty.transpose(1, 2)[rows], clean.transpose(1, 2)[rows]   # (n, H, Dh)
    bad = (got != want).flatten(1).any(1)
    assert not bad.any(), (f"{impl}: {int(bad.sum())} of {int(rows.sum())} blind rows changed, "
                           f"(b, i) = {rows.nonzero()[bad].tolist()[:8]}; first {got[bad][0, 0].tolist()}")


#: "scale 1e35": scores ~1e35; "logits": q and k multiplied by LOGIT_FACTOR (scores ~1e30 in
#: float32/bfloat16, ~1e5 in float16, beyond its range but not float32's). Both dwarf any additive mask.
HUGE = ("scale 1e35", "logits")
LOGIT_FACTOR = {torch.float32: 1e15, torch.bfloat16: 1e15, torch.float16: 150.0}


def huge_check(impl, case, dtype, mode) -> None:
    """Huge scale or logits: no weight on a disallowed pair (weights and a value probe)."""
    scale = 1e35 if mode == "scale 1e35" else None
    q, k, v = tensors(case, dtype, 1.0 if scale else LOGIT_FACTOR[dtype])
    out = run(impl, q, k, v, case, scale=scale)
    v2 = v.clone()
    v2[:, :, case["P"]] += 1000                                           # a probe, finite: 0 * probe = 0
    probed = run(impl, q, k, v2, case, scale=scale)
    rows = blind_rows(case)
    assert torch.isfinite(out.float()).all(), f"{impl}: non-finite output with {mode} in {dtype}"
    got, want = probed.transpose(1, 2)[rows], out.transpose(1, 2)[rows]
    assert torch.equal(got, want), f"{impl}: a value the row may not attend moved it ({mode}, {dtype})"
    if impl in WEIGHTS:
        _, w = run(impl, q, k, v, case, scale=scale, return_weights=True)
        allowed = brute_allowed_tensor(case["T"], case["window"], case["global_mask"], case["key_padding_mask"],
                                       case["causal"], B)[:, None].expand_as(w)
        assert torch.isfinite(w).all()
        assert torch.equal(w[~allowed], torch.zeros_like(w[~allowed])), (
            f"{impl}: weight {w[~allowed].abs().max().item()} on a disallowed pair ({mode}, {dtype})")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUICK = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- dense, looped, unfold, blocked
@pytest.mark.parametrize("impl", CHEAP)
@QUICK
@given(case=cases())
def test_poison_outside_the_mask_leaves_rows_bit_identical(impl, case):
    poison_check(impl, case)


@pytest.mark.parametrize("impl", CHEAP)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", HUGE)
@settings(QUICK, max_examples=15)
@given(case=cases())
def test_huge_scale_and_logits_give_no_weight_to_disallowed_pairs(impl, dtype, mode, case):
    huge_check(impl, case, DTYPES[dtype], mode)


# --------------------------------------------------------------------------- flex (compiled, CPU inference)
needs_flex = pytest.mark.skipif(not FLEX_OK, reason="compiled FlexAttention cannot run on this machine")


@pytest.mark.slow
@needs_flex
@settings(QUICK, max_examples=20)
@given(case=cases(fixed=True))
def test_flex_poison_outside_the_mask_leaves_rows_bit_identical(case):
    poison_check("hybrid(flex)", case)


@pytest.mark.slow
@needs_flex
@pytest.mark.parametrize("dtype, mode", [("float16", "logits"), ("bfloat16", "scale 1e35")])
@settings(QUICK, max_examples=8)
@given(case=cases(fixed=True))
def test_flex_huge_scale_and_logits_give_no_weight_to_disallowed_pairs(dtype, mode, case):
    huge_check("hybrid(flex)", case, DTYPES[dtype], mode)


# --------------------------------------------------------------------------- triton (CPU interpreter)
@pytest.mark.skipif(not (HAS_TRITON and INTERPRETING), reason="runs inside test_triton_under_interpreter")
@settings(QUICK, max_examples=6, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # interpreted: no shrinking
@given(case=cases(), dtype=st.sampled_from(["float32", "float16"]), mode=st.sampled_from(HUGE))
def test_triton_interpreted(case, dtype, mode):
    poison_check("hybrid(triton)", case)
    huge_check("hybrid(triton)", case, DTYPES[dtype], mode)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")
@pytest.mark.skipif(INTERPRETING, reason="already inside the interpreter run")
def test_triton_under_interpreter():
    """The Triton kernel's cases, in a child with TRITON_INTERPRET=1 (bfloat16 excluded: the
    Triton 3.x interpreter computes bfloat16 ``tl.dot`` wrongly)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          f"{Path(__file__).relative_to(ROOT)}::test_triton_interpreted"],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout[-4000:] + res.stderr[-2000:]
