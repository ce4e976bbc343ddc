"""Comparators: ``compare(got, expected, case) -> None | message``.

A message says what is wrong and where (the case, the shape, the index, the query) but never
shows the expected value itself. Tensor comparisons use torch.testing-style tolerances.
"""
from __future__ import annotations

import math
import numbers
import operator
import reprlib
from typing import List, Optional

import torch
from torch import Tensor

ATOL, RTOL = 1e-5, 1e-4
#: looser (rtol, atol) for half-precision answers: their own rounding is about 1e-3 (torch.testing's)
HALF_TOLERANCES = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5)}


def type_name(x) -> str:
    """The type of ``x`` as feedback names it: ``int`` for a builtin, ``numpy.int64`` for others."""
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def shown(x, most: int = 80) -> str:
    """``repr(x)`` for feedback, at most about ``most`` characters (a 60 MB string or an int of a
    million digits is cut, never copied whole or refused by Python's int-to-str limit)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = most
    short.maxlist = short.maxtuple = short.maxdict = 8
    try:
        text = short.repr(x)
    except Exception:                   # a learner's __repr__ that raises, a too-long int
        text = f"<{type_name(x)}>"
    return text if len(text) <= most else text[:most - 3] + "..."


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def tensor_problem(got, expected: Tensor, what: str = "your result") -> Optional[str]:
    """Type, shape, dtype, device and NaN checks shared by every tensor comparison."""
    if not isinstance(got, Tensor):
        return f"{what} is a {type_name(got)}, but it should be a torch.Tensor of shape {_shape(expected)}."
    if type(got) not in (Tensor, torch.nn.Parameter):      # a subclass may answer comparisons as it likes
        return f"{what} is a {type_name(got)}, a subclass of torch.Tensor: return a plain torch.Tensor."
    if got.shape != expected.shape:
        return f"{what} has shape {_shape(got)}, but it should have shape {_shape(expected)}."
    if got.dtype != expected.dtype:
        return f"{what} has dtype {got.dtype}, but it should have dtype {expected.dtype}."
    if got.device != expected.device:
        return f"{what} is on device {got.device}, but it should stay on {expected.device} like the inputs."
    if got.is_floating_point() and bool(torch.isnan(got).any()):
        index = tuple(torch.nonzero(torch.isnan(got))[0].tolist())
        return (f"{what} contains NaN (first at index {list(index)}). A row with no allowed key "
                f"should give zeros: never take a softmax over nothing but -inf.")
    return None


def _mismatch(got: Tensor, expected: Tensor) -> Tensor:
    """Bool tensor, True where got and expected disagree (exactly for bool/int, closely for float)."""
    if got.is_floating_point():
        rtol, atol = HALF_TOLERANCES.get(expected.dtype, (RTOL, ATOL))
        return ~torch.isclose(got.detach(), expected, rtol=rtol, atol=atol)
    return got != expected


def _largest_difference(got: Tensor, expected: Tensor) -> str:
    if not got.is_floating_point():
        return ""
    diff = (got.detach().double() - expected.double()).abs().max().item()
    return f" (largest difference {diff:.2g})"


def _real_rows(case, shape) -> Tensor:
    """(B, T) bool: the query rows of ``case`` that are not padding (all of them without a padding mask)."""
    pad = getattr(case, "key_padding_mask", None)
    pad = pad() if callable(pad) else None
    if isinstance(pad, Tensor) and tuple(pad.shape) == tuple(shape):
        return ~pad
    return torch.ones(shape, dtype=torch.bool)


def compare_attention(got, expected: Tensor, case) -> Optional[str]:
    """Attention outputs (B, H, T, D): name the query rows that differ."""
    problem = tensor_problem(got, expected)
    if problem:
        return problem
    bad = _mismatch(got, expected).flatten(3).any(-1).any(1)           # (B, T) rows that differ
    if not bool(bad.any()):
        return None
    real = _real_rows(case, bad.shape)                                  # (B, T) rows that are not padding
    if bool(bad[real].all()) and int(real.sum()) > 1:
        return (f"every output row differs{_largest_difference(got, expected)}, not just some queries: "
                f"look for a mistake that touches every row, such as the scale 1/sqrt(Dh) of the "
                f"scores or the axis of the softmax.")
    b, i = torch.nonzero(bad)[0].tolist()
    rows = [f"sequence {s}: queries {torch.nonzero(bad[s]).flatten().tolist()}"
            for s in range(bad.shape[0]) if bool(bad[s].any())]
    return (f"the output row of {case.describe_query(b, i)} is not right"
            f"{_largest_difference(got, expected)}. Rows that differ: {'; '.join(rows)}.")


def _first_wrong_entry(got, expected: Tensor, where) -> Optional[str]:
    """Shared by the table comparators: ``where(index)`` names the first entry that differs."""
    problem = tensor_problem(got, expected)
    if problem:
        return problem
    bad = _mismatch(got, expected)
    if not bool(bad.any()):
        return None
    index = torch.nonzero(bad)[0].tolist()
    return (f"entry {index}{where(index)} is not right{_largest_difference(got, expected)}; "
            f"{int(bad.sum())} of {bad.numel()} entries differ.")


def compare_pairs(got, expected: Tensor, case) -> Optional[str]:
    """(query, key) tables of shape (..., T, T): masks or attention maps; names the first wrong pair."""
    return _first_wrong_entry(got, expected, lambda ix: f" (query {ix[-2]}, key {ix[-1]})")


def compare_tensor(got, expected: Tensor, case) -> Optional[str]:
    """Any tensor: the first index that differs."""
    return _first_wrong_entry(got, expected, lambda ix: "")


def compare_windows(got, expected: Tensor, case) -> Optional[str]:
    """Per-query window tables (..., T, slots): names the first wrong slot of a query."""
    return _first_wrong_entry(got, expected, lambda ix: f" (slot {ix[-1]} of query {ix[-2]})")


def as_int(got) -> Optional[int]:
    """An integer answer as int, or None when it is not a whole-number type."""
    if isinstance(got, bool) or isinstance(got, float):
        return None
    if isinstance(got, Tensor):
        if got.numel() != 1 or got.is_floating_point() or got.dtype == torch.bool:
            return None
        return int(got.item())
    try:
        return operator.index(got)
    except TypeError:
        return None


def compare_int(got, expected: int, case) -> Optional[str]:
    """A plain Python int (numpy ints too); floats and tensors are refused with a kind word.

    The message never repeats the value given: a float that holds the right count would give it away.
    """
    if isinstance(got, Tensor):
        return (f"you returned a {got.dim()}-d torch.Tensor; the question asks for a plain int: "
                f"`int(x)` or `x.item()` turns a one-element tensor into one.")
    value = as_int(got)
    if value is None:
        if isinstance(got, float):
            return "you returned a float; a count is a whole number, so return an int."
        return f"you returned a {type_name(got)}; it should be an int."
    if value != expected:
        return f"{value} is not the right count."
    return None


def compare_number(got, expected: float, case, rel: float = 1e-3) -> Optional[str]:
    """A real number, right to a relative tolerance ``rel`` (a one-element tensor is fine too)."""
    if isinstance(got, Tensor) and got.numel() == 1 and got.dtype != torch.bool:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        return f"you gave a {type_name(got)}; it should be a number."
    if not math.isfinite(float(got)) or not math.isclose(float(got), expected, rel_tol=rel):
        return f"{got!r} is not right."
    return None


def compare_sorted_ints(got, expected: List[int], case) -> Optional[str]:
    """A sorted list of distinct ints (key positions); says which of the learner's keys is wrong."""
    if not isinstance(got, (list, tuple)):
        return f"you returned a {type_name(got)}; it should be a list of int key positions."
    values = [as_int(x) for x in got]
    if any(x is None for x in values):
        bad = next(x for x, v in zip(got, values) if v is None)
        return f"your list holds {bad!r} ({type_name(bad)}); every entry should be an int position."
    seen = set()
    for x in values:
        if x in seen:
            return (f"key {x} appears twice. Each (query, key) pair enters the softmax once, "
                    f"however many rules allow it.")
        seen.add(x)
    extra = sorted(seen - set(expected))
    if extra:
        return f"your list has key {extra[0]}, which this query may not attend."
    missing = len(set(expected) - seen)
    if missing:
        return f"your list leaves out {missing} key(s) this query may attend."
    if values != sorted(values):
        return "the keys are right but not sorted: return them in increasing order."
    return None
