"""Checkers of notebook 07 (the backward pass): the classic backward bugs (a missing scale,
an un-normalized P, D from the wrong tensor, forgetting the global keys' dk/dv, a global key inside
the window counted twice) are "incorrect" with a message naming the case (the reference, the stored
solution and the placeholder of every question are tested in test_exercises.py)."""
from __future__ import annotations

import pytest
import torch
from exercise_helpers import check, solution


def test_autograd_is_not_the_answer():
    def by_autograd(q, k, v, do, allowed, scale):
        q, k, v = (x.clone().requires_grad_() for x in (q, k, v))
        s = (scale * q @ k.transpose(-1, -2)).masked_fill(~allowed[:, None], float("-inf"))
        out = torch.nan_to_num(torch.softmax(s, -1)) @ v
        out.backward(do)
        return q.grad, k.grad, v.grad
    result = check("07.q2", by_autograd)
    assert result.status == "incorrect" and "torch.autograd" in result.message, result.message


# --------------------------------------------------------------------------- 07.q1 softmax backward
def no_D(p, dp):
    return p * dp


def D_from_dp(p, dp):
    """D = rowsum(dP): the wrong tensor (it should be rowsum(P * dP))."""
    return p * (dp - dp.sum(-1, keepdim=True))


def forgets_p(p, dp):
    return dp - (p * dp).sum(-1, keepdim=True)


def D_not_per_row(p, dp):
    """One D for the whole tensor instead of one per row."""
    return p * (dp - (p * dp).sum())


# --------------------------------------------------------------------------- 07.q2 attention backward
def _probs(s, allowed):
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    m = s.amax(-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    return p, p.sum(-1, keepdim=True)


def _backward(p, q, k, v, do, scale, D=None, scale_dq=True):
    dp = do @ v.transpose(-1, -2)
    D = (p * dp).sum(-1, keepdim=True) if D is None else D
    ds = p * (dp - D)
    sq = scale if scale_dq else 1.0
    return sq * ds @ k, sq * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do


def attn_missing_scale(q, k, v, do, allowed, scale):
    p, l = _probs(scale * q @ k.transpose(-1, -2), allowed)
    return _backward(p / torch.where(l > 0, l, torch.ones_like(l)), q, k, v, do, scale, scale_dq=False)


def attn_unnormalized_p(q, k, v, do, allowed, scale):
    p, _ = _probs(scale * q @ k.transpose(-1, -2), allowed)               # exp(s - max), rows not summing to 1
    return _backward(p, q, k, v, do, scale)


def attn_D_from_dO_dO(q, k, v, do, allowed, scale):
    p, l = _probs(scale * q @ k.transpose(-1, -2), allowed)
    p = p / torch.where(l > 0, l, torch.ones_like(l))
    return _backward(p, q, k, v, do, scale, D=(do * do).sum(-1, keepdim=True))


def attn_nan_rows(q, k, v, do, allowed, scale):
    """softmax over -inf rows: NaN on a row with no allowed key."""
    s = (scale * q @ k.transpose(-1, -2)).masked_fill(~allowed[:, None], float("-inf"))
    return _backward(torch.softmax(s, -1), q, k, v, do, scale)


def attn_swapped_dk_dv(q, k, v, do, allowed, scale):
    dq, dk, dv = solution("07.q2")(q, k, v, do, allowed, scale)
    return dq, dv, dk


# --------------------------------------------------------------------------- 07.q3 one block, recomputed
def _p_from_lse(q, k, lse, allowed, scale):
    s = scale * q @ k.transpose(-1, -2)
    return torch.where(allowed[:, None], torch.exp(s - lse[..., None]), torch.zeros_like(s))   # lse = +inf: 0


def block_D_from_span(q, k, v, out, lse, do, allowed, scale):
    """D = rowsum(P * dP) over the span only: misses the global keys' terms."""
    return _backward(_p_from_lse(q, k, lse, allowed, scale), q, k, v, do, scale)


def block_softmax_over_span(q, k, v, out, lse, do, allowed, scale):
    """Ignores lse and re-normalizes over the span: P no longer matches the forward's."""
    p, l = _probs(scale * q @ k.transpose(-1, -2), allowed)
    p = p / torch.where(l > 0, l, torch.ones_like(l))
    return _backward(p, q, k, v, do, scale, D=(do * out).sum(-1, keepdim=True))


def block_unnormalized(q, k, v, out, lse, do, allowed, scale):
    """exp(S) without subtracting lse."""
    s = scale * q @ k.transpose(-1, -2)
    p = torch.where(allowed[:, None], torch.exp(s), torch.zeros_like(s))
    return _backward(p, q, k, v, do, scale, D=(do * out).sum(-1, keepdim=True))


def block_missing_scale(q, k, v, out, lse, do, allowed, scale):
    return _backward(_p_from_lse(q, k, lse, allowed, scale), q, k, v, do, scale,
                     D=(do * out).sum(-1, keepdim=True), scale_dq=False)


def block_no_mask(q, k, v, out, lse, do, allowed, scale):
    """Trusts lse = +inf to zero what must be zero and forgets ``allowed``: the span's other keys get weight."""
    p = torch.exp(scale * q @ k.transpose(-1, -2) - lse[..., None])
    return _backward(p, q, k, v, do, scale, D=(do * out).sum(-1, keepdim=True))


def test_lse_of_an_empty_row_is_plus_inf_so_no_guard_is_needed():
    """docs/spec.md: an empty row's lse is +inf, so exp(s - lse) * allowed is 0 there, not inf * 0 = NaN."""
    def multiplies_by_the_mask(q, k, v, out, lse, do, allowed, scale):
        p = torch.exp(scale * q @ k.transpose(-1, -2) - lse[..., None]) * allowed[:, None]
        return _backward(p, q, k, v, do, scale, D=(do * out).sum(-1, keepdim=True))
    assert check("07.q3", multiplies_by_the_mask).status == "correct"
    assert check("07.q4", padded_rows_live).status == "incorrect"       # ... but 0 is no stand-in for +inf


# --------------------------------------------------------------------------- 07.q4 global keys
def _global_parts(q, k, v, do, out, lse, window, global_positions, scale):
    """P, dS (B, H, T, G) of every live query against the global keys, and |i - g| <= window."""
    kg, vg = k[:, :, global_positions], v[:, :, global_positions]
    s = scale * q @ kg.transpose(-1, -2)
    p = torch.exp(s - lse[..., None])                                   # lse = +inf on padded rows: 0
    ds = p * (do @ vg.transpose(-1, -2) - (do * out).sum(-1, keepdim=True))
    T = q.shape[2]
    near = (torch.arange(T)[:, None] - torch.tensor(global_positions)[None, :]).abs() <= window  # (T, G)
    return p, ds, near


def _sum(p, ds, q, do, scale, weight):
    return scale * (ds * weight).transpose(-1, -2) @ q, (p * weight).transpose(-1, -2) @ do


def window_only(q, k, v, do, out, lse, window, global_positions, scale):
    """Forgets the global column: only the queries whose window holds the key."""
    p, ds, near = _global_parts(q, k, v, do, out, lse, window, global_positions, scale)
    return _sum(p, ds, q, do, scale, near.float())


def window_counted_twice(q, k, v, do, out, lse, window, global_positions, scale):
    """Window part plus a global column over *all* queries: the window's queries count twice."""
    p, ds, near = _global_parts(q, k, v, do, out, lse, window, global_positions, scale)
    return _sum(p, ds, q, do, scale, 1.0 + near.float())


def column_only(q, k, v, do, out, lse, window, global_positions, scale):
    """Only the queries outside the window: forgets the band's share."""
    p, ds, near = _global_parts(q, k, v, do, out, lse, window, global_positions, scale)
    return _sum(p, ds, q, do, scale, (~near).float())


def global_missing_scale(q, k, v, do, out, lse, window, global_positions, scale):
    p, ds, near = _global_parts(q, k, v, do, out, lse, window, global_positions, scale)
    return _sum(p, ds, q, do, 1.0, 1.0)


def padded_rows_live(q, k, v, do, out, lse, window, global_positions, scale):
    """Replaces lse = +inf by 0 (a guard for -inf): padded rows come alive with P = exp(s)."""
    kg, vg = k[:, :, global_positions], v[:, :, global_positions]
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    p = torch.exp(scale * q @ kg.transpose(-1, -2) - lse[..., None])
    ds = p * (do @ vg.transpose(-1, -2) - (do * out).sum(-1, keepdim=True))
    return scale * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do


def D_from_dp_global(q, k, v, do, out, lse, window, global_positions, scale):
    """D = rowsum(P * dP) over the global columns only, the wrong tensor: the window keys' terms are missing."""
    p, _, _ = _global_parts(q, k, v, do, out, lse, window, global_positions, scale)
    vg = v[:, :, global_positions]
    dp = do @ vg.transpose(-1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return scale * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do


#: the planted wrong answers, by question (tests/exercises/test_exercises.py checks every question has some),
#: each with words its message must contain
WRONG_WORDS = {
    "07.q1": {"no D": (no_D, "case '"), "D from dP": (D_from_dp, "case '"), "forgets p": (forgets_p, "case '"),
              "one D for all rows": (D_not_per_row, "a batch of rows")},
    "07.q2": {"missing scale": (attn_missing_scale, "factor 1/scale"), "un-normalized P": (attn_unnormalized_p, "case '"),
              "D from dO * dO": (attn_D_from_dO_dO, "case '"), "NaN on empty rows": (attn_nan_rows, "NaN"),
              "dk and dv swapped": (attn_swapped_dk_dv, "dk")},
    "07.q3": {"D from the span": (block_D_from_span, "global keys outside the span"),
              "softmax over the span": (block_softmax_over_span, "global keys outside the span"),
              "un-normalized P": (block_unnormalized, "case '"), "missing scale": (block_missing_scale, "factor 1/scale"),
              "no mask (lse = +inf is not a mask)": (block_no_mask, "case '")},
    "07.q4": {"window only": (window_only, "case '"), "window counted twice": (window_counted_twice, "case '"),
              "column only": (column_only, "case '"), "missing scale": (global_missing_scale, "factor 1/scale"),
              "padded rows live": (padded_rows_live, "padded tail"), "D from dP": (D_from_dp_global, "case '")},
}
WRONG = {qid: {label: fn for label, (fn, _) in table.items()} for qid, table in WRONG_WORDS.items()}


@pytest.mark.parametrize("qid, label", [(qid, label) for qid, table in WRONG_WORDS.items() for label in table])
def test_classic_backward_bugs_are_incorrect(qid, label):
    wrong, words = WRONG_WORDS[qid][label]
    result = check(qid, wrong)
    assert result.status == "incorrect" and "case '" in result.message and words in result.message, result.message
