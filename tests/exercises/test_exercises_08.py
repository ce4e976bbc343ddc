"""Checkers of notebook 08 (beyond one device): classic wrong answers are "incorrect" with a
message naming the case (the reference, the stored solution and the placeholder of every question
are tested in test_exercises.py)."""
from __future__ import annotations

import pytest
import torch
from exercise_helpers import check, solution


# --------------------------------------------------------------------------- 08.q1 halo slices
def _starts(lengths):
    return [sum(lengths[:r]) for r in range(len(lengths))]


def neighbours_only(lengths, rank, window, causal):
    """Takes up to w rows from the two neighbours only: wrong once w exceeds a shard."""
    out = []
    if rank > 0 and window > 0:
        n = lengths[rank - 1]
        out.append((rank - 1, max(0, n - window), n))
    if rank + 1 < len(lengths) and window > 0 and not causal:
        out.append((rank + 1, 0, min(window, lengths[rank + 1])))
    return out


def global_indices(lengths, rank, window, causal):
    """Right ranks, but slices in whole-sequence positions instead of the sender's local rows."""
    ref = solution("08.q1")(lengths, rank, window, causal)
    starts = _starts(lengths)
    return [(s, lo + starts[s], hi + starts[s]) for s, lo, hi in ref]


def ignores_causal(lengths, rank, window, causal):
    return solution("08.q1")(lengths, rank, window, False)


def with_empty_slices(lengths, rank, window, causal):
    ref = solution("08.q1")(lengths, rank, window, causal)
    return ref + [(r, 0, 0) for r in range(len(lengths)) if r != rank and r not in {s for s, _, _ in ref}]


def reversed_order(lengths, rank, window, causal):
    return list(reversed(solution("08.q1")(lengths, rank, window, causal)))


@pytest.mark.parametrize("wrong, words", [(neighbours_only, "w longer than a shard"),
                                          (global_indices, "does not need rows"),
                                          (ignores_causal, "causal"),
                                          (with_empty_slices, "empty slice"),
                                          (reversed_order, "position order")])
def test_halo_slices_wrong_answers(wrong, words):
    result = check("08.q1", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 08.q2 merge
def no_rescale(m1, l1, o1, m2, l2, o2):
    """Adds the sums as if both sides used the same max."""
    l = l1 + l2
    return (o1 + o2) / torch.where(l > 0, l, torch.ones_like(l))


def average_outputs(m1, l1, o1, m2, l2, o2):
    """Averages the two normalised outputs: ignores how much mass each side has."""
    a = o1 / torch.where(l1 > 0, l1, torch.ones_like(l1))
    b = o2 / torch.where(l2 > 0, l2, torch.ones_like(l2))
    return (a + b) / 2


def absolute_exp(m1, l1, o1, m2, l2, o2):
    """Rescales by exp(m) itself: overflows for large scores."""
    a, b = torch.exp(m1), torch.exp(m2)
    l = l1 * a + l2 * b
    return (o1 * a + o2 * b) / torch.where(l > 0, l, torch.ones_like(l))


def no_empty_guard(m1, l1, o1, m2, l2, o2):
    """Right when both sides have keys; exp(-inf - -inf) = NaN otherwise."""
    m = torch.maximum(m1, m2)
    a, b = torch.exp(m1 - m), torch.exp(m2 - m)
    return (o1 * a + o2 * b) / (l1 * a + l2 * b)


@pytest.mark.parametrize("wrong, words", [(no_rescale, "ordinary scores"), (average_outputs, "ordinary scores"),
                                          (absolute_exp, "large scores"), (no_empty_guard, "NaN")])
def test_merge_wrong_answers(wrong, words):
    result = check("08.q2", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 08.q3 bytes
def two_windows_always(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal):
    """2w rows for every rank: ignores the edges, causal and short shards."""
    return 2 * (2 * window) * B * H * Dh * bytes_per_value


def forgets_v(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal):
    return solution("08.q3")(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal) // 2


def ignores_causal_bytes(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal):
    return solution("08.q3")(T, world_size, rank, window, B, H, Dh, bytes_per_value, False)


def all_gather_bytes(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal):
    from tutor.distributed import shard_bounds
    s, e = shard_bounds(T, world_size)[rank]
    return 2 * (world_size - 1) * (e - s) * B * H * Dh * bytes_per_value


def as_float(*args):
    return float(solution("08.q3")(*args))


@pytest.mark.parametrize("wrong, words", [(two_windows_always, "the first rank"), (forgets_v, "a middle rank"),
                                          (ignores_causal_bytes, "causal"), (all_gather_bytes, "a middle rank"),
                                          (as_float, "float")])
def test_bytes_wrong_answers(wrong, words):
    result = check("08.q3", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


#: the planted wrong answers, by question (tests/exercises/test_exercises.py checks every question has some)
WRONG = {
    "08.q1": {"neighbours only": neighbours_only, "global indices": global_indices,
              "ignores causal": ignores_causal, "empty slices": with_empty_slices, "reversed": reversed_order},
    "08.q2": {"no rescale": no_rescale, "average of outputs": average_outputs, "exp(m) overflows": absolute_exp,
              "no guard for an empty side": no_empty_guard},
    "08.q3": {"2w rows always": two_windows_always, "forgets V": forgets_v, "ignores causal": ignores_causal_bytes,
              "all-gather bytes": all_gather_bytes, "a float": as_float},
}
