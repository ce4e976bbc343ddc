"""The validators of ``tutor.arguments``, each with the full range of odd values (docs/spec.md "Bad input").

Every public function of ``tutor`` judges an argument with one of these, so the verdicts here are
the verdicts everywhere; tests/attention/test_bad_input.py proves that each entry point goes
through them (one bad value per argument). A refusal is a TypeError (wrong kind) or a ValueError
(wrong value, shape or device) whose message names the argument and shows what it got.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from tutor.arguments import (FLOAT_DTYPES, check_bool_mask, check_dilation, check_flag, check_int, check_pattern,
                             check_probability, check_qkv, check_scale, check_window)

# --------------------------------------------------------------------------- integers (window, T, dilation, ...)
#: (value, what check_int(name, value, 0) gives: the int, or the exception type)
INTEGERS = [
    (0, 0), (2, 2), (10 ** 30, 10 ** 30),                                  # huge is fine (clamped later)
    (np.int64(2), 2), (np.int32(2), 2), (np.uint8(2), 2), (np.int16(0), 0),
    (torch.tensor(2), 2), (torch.tensor(2, dtype=torch.int32), 2), (torch.tensor(0, dtype=torch.uint8), 0),
    (-1, ValueError), (np.int64(-3), ValueError), (torch.tensor(-1), ValueError), (-10 ** 30, ValueError),
    (True, TypeError), (False, TypeError), (np.bool_(True), TypeError), (torch.tensor(True), TypeError),
    (2.0, TypeError), (1.5, TypeError), (float("nan"), TypeError), (float("inf"), TypeError),
    (np.float64(2.0), TypeError), (np.float32(2.0), TypeError),
    (torch.tensor(2.0), TypeError), (torch.tensor([2]), TypeError), (torch.tensor([[2]]), TypeError),
    (torch.tensor([2, 3]), TypeError), (np.array([2]), TypeError),
    ("2", TypeError), (b"2", TypeError), (None, TypeError), ([2], TypeError), ((2,), TypeError),
    (2 + 0j, TypeError), (object(), TypeError),
]


@pytest.mark.parametrize("value, want", INTEGERS, ids=repr)
def test_check_window(value, want):
    if isinstance(want, type):
        with pytest.raises(want, match=r"^window must be an int >= 0, got ") as info:
            check_window(value)
        if want is TypeError:
            assert type(value).__name__ in str(info.value)                    # shows the kind it got
    else:
        got = check_window(value)
        assert got == want and type(got) is int


def test_check_window_names_the_argument_it_is_given():
    with pytest.raises(ValueError, match=r"^memory_window must be an int >= 0, got -2$"):
        check_window(-2, "memory_window")


@pytest.mark.parametrize("value, want", INTEGERS, ids=repr)
def test_check_int_has_one_rule_for_every_minimum(value, want, minimum=2):
    """The kind rule does not depend on the minimum (window's is 0); only the bound does."""
    if isinstance(want, type):
        with pytest.raises(want, match=rf"^T must be an int >= {minimum}, got "):
            check_int("T", value, minimum)
    elif want < minimum:
        with pytest.raises(ValueError, match=rf"^T must be an int >= {minimum}, got {want}$"):
            check_int("T", value, minimum)
    else:
        assert check_int("T", value, minimum) == want


@pytest.mark.parametrize("value, exc", [(0, ValueError), (-1, ValueError), (np.int64(0), ValueError),
                                        (1.0, TypeError), (True, TypeError), ("2", TypeError),
                                        (None, TypeError), (torch.tensor(2.0), TypeError)], ids=repr)
def test_check_dilation_refuses(value, exc):
    with pytest.raises(exc, match=r"^dilation must be an int >= 1, got "):
        check_dilation(value)


@pytest.mark.parametrize("value", [1, 3, np.int64(2), torch.tensor(2)], ids=repr)
def test_check_dilation_accepts(value):
    assert check_dilation(value) == int(value)


# --------------------------------------------------------------------------- flags (causal, return_weights, ...)
@pytest.mark.parametrize("value", [True, False, np.bool_(True), np.bool_(False)], ids=repr)
def test_check_flag_accepts_bools(value):
    got = check_flag("causal", value)
    assert got is bool(value)                                              # a plain bool


@pytest.mark.parametrize("value", ["no", "False", "", 1, 0, 1.0, None, torch.tensor(True), torch.tensor(1),
                                   np.int64(1), [True], np.array(True)], ids=repr)
def test_check_flag_refuses_everything_else(value):
    """``causal="no"`` used to mean causal: a truthy stand-in is refused, never read as True."""
    with pytest.raises(TypeError, match=rf"^return_weights must be a bool \(True or False\), got "
                                        rf"{re.escape(type(value).__name__)}"):
        check_flag("return_weights", value)


# --------------------------------------------------------------------------- scale
@pytest.mark.parametrize("value, want", [(None, None), (0.5, 0.5), (2, 2.0), (0, 0.0), (0.0, 0.0), (-1.5, -1.5),
                                         (np.float32(0.5), 0.5), (np.int64(3), 3.0), (1e-300, 1e-300),
                                         (1e300, 1e300)], ids=repr)
def test_check_scale_accepts_none_and_finite_reals(value, want):
    """Zero and negative scales run, as in torch's scaled_dot_product_attention."""
    got = check_scale(value)
    assert got == want and (got is None or type(got) is float)


@pytest.mark.parametrize("value, exc", [
    (True, TypeError), (False, TypeError), (np.bool_(True), TypeError), ("0.5", TypeError), ([0.5], TypeError),
    (torch.tensor(0.5), TypeError), (torch.tensor([0.5]), TypeError), (1 + 0j, TypeError), (object(), TypeError),
    (float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError), (np.float64("nan"), ValueError),
    (np.float32("inf"), ValueError), (math.inf, ValueError)], ids=repr)
def test_check_scale_refuses(value, exc):
    with pytest.raises(exc, match=r"^scale must be "):
        check_scale(value)


# --------------------------------------------------------------------------- probabilities (dropout_p)
@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999, np.float32(0.25), np.int64(0)], ids=repr)
def test_check_probability_accepts(value):
    got = check_probability("dropout_p", value)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize("value, exc", [(-0.1, ValueError), (1.0, ValueError), (1, ValueError), (1.5, ValueError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        ("0.1", TypeError), (True, TypeError), (False, TypeError), (None, TypeError),
                                        ([0.1], TypeError), (torch.tensor(0.1), TypeError)], ids=repr)
def test_check_probability_refuses(value, exc):
    with pytest.raises(exc, match=r"^dropout_p must be "):
        check_probability("dropout_p", value)


# --------------------------------------------------------------------------- bool masks (global_mask, key_padding_mask)
B, T = 2, 5


def shape(*s):
    return re.escape(str(tuple(s)))


def bool_(*s, device="cpu"):
    return torch.zeros(*s, dtype=torch.bool, device=device)


MASKS = [
    ("float", torch.zeros(B, T), TypeError, r"float32"),
    ("uint8", torch.zeros(B, T, dtype=torch.uint8), TypeError, r"uint8"),
    ("int64", torch.zeros(B, T, dtype=torch.int64), TypeError, r"int64"),
    ("list", [[False] * T] * B, TypeError, r"list"),
    ("numpy", np.zeros((B, T), dtype=bool), TypeError, r"ndarray"),
    ("bool", True, TypeError, r"bool"),
    ("(B, T+1)", bool_(B, T + 1), ValueError, shape(B, T + 1)),
    ("(B, T-1)", bool_(B, T - 1), ValueError, shape(B, T - 1)),
    ("(1, T) no broadcast", bool_(1, T), ValueError, shape(1, T)),
    ("(B+1, T)", bool_(B + 1, T), ValueError, shape(B + 1, T)),
    ("(T,)", bool_(T), ValueError, shape(T)),
    ("0-d", torch.tensor(True), ValueError, r"\(\)"),
    ("(B, T, 1)", bool_(B, T, 1), ValueError, shape(B, T, 1)),
    ("(T, B) transposed", bool_(T, B), ValueError, shape(T, B)),
    ("on meta", bool_(B, T, device="meta"), ValueError, r"meta"),
]


@pytest.mark.parametrize("name", ["global_mask", "key_padding_mask"])
@pytest.mark.parametrize("label, mask, exc, pattern", MASKS, ids=[m[0] for m in MASKS])
def test_check_bool_mask_refuses(name, label, mask, exc, pattern):
    with pytest.raises(exc, match=rf"^{name} .*{pattern}"):
        check_bool_mask(name, mask, B, T, torch.device("cpu"))


def test_check_bool_mask_accepts_none_and_bool_B_T():
    assert check_bool_mask("global_mask", None, B, T, "cpu") is None
    m = bool_(B, T)
    assert check_bool_mask("global_mask", m, B, T, "cpu") is m
    assert check_bool_mask("global_mask", bool_(3, T), None, T) is not None            # any B
    assert check_bool_mask("global_mask", bool_(3, 7), None, None) is not None         # any B, any T
    assert check_bool_mask("global_mask", bool_(B, T, device="meta"), B, T) is not None  # any device
    with pytest.raises(ValueError, match=r"global_mask must have shape \(B, T\) with T=5, got \(3, 4\)"):
        check_bool_mask("global_mask", bool_(3, 4), None, T)


# --------------------------------------------------------------------------- q, k, v
H, Dh = 2, 4


def qkv(**overrides):
    g = torch.Generator().manual_seed(0)
    args = {name: torch.randn(B, H, T, Dh, generator=g) for name in ("q", "k", "v")}
    return {**args, **overrides}


QKV = [
    ("q not a tensor", dict(q=[[1.0]]), TypeError, r"\bq\b.*list"),
    ("v None", dict(v=None), TypeError, r"\bv\b.*NoneType"),
    ("k numpy", dict(k=np.zeros((B, H, T, Dh), dtype=np.float32)), TypeError, r"\bk\b.*ndarray"),
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
    ("Dh = 0", dict(q=torch.randn(B, H, T, 0), k=torch.randn(B, H, T, 0), v=torch.randn(B, H, T, 0)),
     ValueError, r"\bq\b.*" + shape(B, H, T, 0)),
    ("k float64, q float32", dict(k=torch.randn(B, H, T, Dh, dtype=torch.float64)), TypeError, r"\bk\b.*float64"),
    ("v float16, q float32", dict(v=torch.randn(B, H, T, Dh).half()), TypeError, r"\bv\b.*float16"),
    ("q int64", dict(q=torch.ones(B, H, T, Dh, dtype=torch.int64)), TypeError, r"\bq\b.*int64"),
    ("all int32", dict(q=torch.ones(B, H, T, Dh, dtype=torch.int32), k=torch.ones(B, H, T, Dh, dtype=torch.int32),
                       v=torch.ones(B, H, T, Dh, dtype=torch.int32)), TypeError, r"\bq\b.*int32"),
    ("k bool", dict(k=torch.ones(B, H, T, Dh, dtype=torch.bool)), TypeError, r"\bk\b.*bool"),
    ("v complex", dict(v=torch.ones(B, H, T, Dh, dtype=torch.complex64)), TypeError, r"\bv\b.*complex64"),
    ("k on meta", dict(k=torch.randn(B, H, T, Dh, device="meta")), ValueError, r"\bk\b.*meta"),
    ("v on meta", dict(v=torch.randn(B, H, T, Dh, device="meta")), ValueError, r"\bv\b.*meta"),
    ("all on meta", dict(q=torch.randn(B, H, T, Dh, device="meta"), k=torch.randn(B, H, T, Dh, device="meta"),
                         v=torch.randn(B, H, T, Dh, device="meta")), ValueError, r"q, k, v.*meta device"),
]


@pytest.mark.parametrize("label, overrides, exc, pattern", QKV, ids=[c[0] for c in QKV])
def test_check_qkv_refuses(label, overrides, exc, pattern):
    args = qkv(**overrides)
    with pytest.raises(exc, match=pattern):
        check_qkv(args["q"], args["k"], args["v"])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_check_qkv_accepts_every_float_dtype_and_empty_batches(dtype):
    args = qkv()
    check_qkv(*(args[n].to(dtype) for n in ("q", "k", "v")))
    empty = torch.zeros(0, H, T, Dh, dtype=dtype)                          # B = 0: an empty answer, not an error
    check_qkv(empty, empty, empty)


# --------------------------------------------------------------------------- pattern
def test_check_pattern():
    def mod(batch, head, q_idx, kv_idx):
        return q_idx == kv_idx
    assert check_pattern(None) is None and check_pattern(mod) is mod
    for bad in (3, "mod", torch.ones(2, 2, dtype=torch.bool)):
        with pytest.raises(TypeError, match=rf"^pattern must be a mask_mod.*{type(bad).__name__}"):
            check_pattern(bad)
