"""Checkers of notebook 09 (into real models): classic wrong answers are "incorrect" with a
message naming the case (the reference, the stored solution and the placeholder of every question
are tested in test_exercises.py)."""
from __future__ import annotations

import pytest
import torch
from exercise_helpers import check, solution


# --------------------------------------------------------------------------- 09.q1 to flash-attn
def total_as_one_side(library, value):
    """Longformer's attention_window taken as the one-sided w."""
    return (value, value, False) if library == "longformer" else solution("09.q1")(library, value)


def sliding_window_as_left(library, value):
    """Mistral's sliding_window passed straight to flash-attn: one key too many."""
    return (value, 0, True) if library == "mistral" else solution("09.q1")(library, value)


def old_transformers_fa2(library, value):
    """(sliding_window, sliding_window): what transformers once passed, one key more than eager."""
    return (value, value, True) if library == "mistral" else solution("09.q1")(library, value)


def forgets_causal(library, value):
    left, right, _ = solution("09.q1")(library, value)
    return (left, left, False)


def half_as_float(library, value):
    return (value / 2, value / 2, False) if library == "longformer" else solution("09.q1")(library, value)


def only_left_right(library, value):
    return solution("09.q1")(library, value)[:2]


@pytest.mark.parametrize("wrong, words", [(total_as_one_side, "Longformer attention_window=8"),
                                          (sliding_window_as_left, "Mistral sliding_window=5"),
                                          (old_transformers_fa2, "Mistral sliding_window=5"),
                                          (forgets_causal, "Mistral"), (half_as_float, "ints"),
                                          (only_left_right, "(left, right, causal)")])
def test_to_flash_wrong_answers(wrong, words):
    result = check("09.q1", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 09.q2 QA global mask
def _first_sep(input_ids, sep_token_id):
    return (input_ids == sep_token_id).int().argmax(dim=1, keepdim=True)


def includes_separator(input_ids, sep_token_id):
    return (torch.arange(input_ids.shape[1])[None] <= _first_sep(input_ids, sep_token_id)).long()


def as_bool(input_ids, sep_token_id):
    return solution("09.q2")(input_ids, sep_token_id).bool()


def only_cls(input_ids, sep_token_id):
    g = torch.zeros_like(input_ids)
    g[:, 0] = 1
    return g


def before_last_separator(input_ids, sep_token_id):
    T = input_ids.shape[1]
    last = T - 1 - (input_ids == sep_token_id).int().flip(1).argmax(dim=1, keepdim=True)
    return (torch.arange(T)[None] < last).long()


def question_without_cls(input_ids, sep_token_id):
    pos = torch.arange(input_ids.shape[1])[None]
    return ((pos >= 1) & (pos < _first_sep(input_ids, sep_token_id))).long()


def hard_coded_sep(input_ids, sep_token_id):
    return solution("09.q2")(input_ids, 2)


@pytest.mark.parametrize("wrong, words", [(includes_separator, "one sequence"), (as_bool, "dtype"),
                                          (only_cls, "one sequence"), (before_last_separator, "one sequence"),
                                          (question_without_cls, "one sequence"),
                                          (hard_coded_sep, "another separator id")])
def test_qa_mask_wrong_answers(wrong, words):
    result = check("09.q2", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 09.q3 local-attention pairs
def our_window(T, window_size, look_backward, look_forward, exact_windowsize):
    """Ignores the buckets: a sliding window of window_size * look."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (i - j <= window_size * look_backward) & (j - i <= window_size * look_forward)


def ignores_exact(T, window_size, look_backward, look_forward, exact_windowsize):
    return solution("09.q3")(T, window_size, look_backward, look_forward, False)


def exact_off_by_one(T, window_size, look_backward, look_forward, exact_windowsize):
    ok = solution("09.q3")(T, window_size, look_backward, look_forward, False)
    if exact_windowsize:
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        ok = ok & (i - j < window_size * look_backward) & (j - i < window_size * look_forward)
    return ok


def symmetric_look(T, window_size, look_backward, look_forward, exact_windowsize):
    return solution("09.q3")(T, window_size, look_backward, look_backward, exact_windowsize)


def transposed(T, window_size, look_backward, look_forward, exact_windowsize):
    return solution("09.q3")(T, window_size, look_backward, look_forward, exact_windowsize).T.contiguous()


@pytest.mark.parametrize("wrong, words", [(our_window, "whole buckets, one on each side"),
                                          (ignores_exact, "exact window"), (exact_off_by_one, "exact window"),
                                          (symmetric_look, "two buckets back, none forward"),
                                          (transposed, "two buckets back, none forward")])
def test_local_attention_pairs_wrong_answers(wrong, words):
    result = check("09.q3", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


#: the planted wrong answers, by question (tests/exercises/test_exercises.py checks every question has some)
WRONG = {
    "09.q1": {"total width as one side": total_as_one_side, "sliding_window as left": sliding_window_as_left,
              "transformers' old FA2 window": old_transformers_fa2, "forgets causal": forgets_causal,
              "floats": half_as_float, "two numbers": only_left_right},
    "09.q2": {"includes the separator": includes_separator, "bool": as_bool, "only <s>": only_cls,
              "before the last separator": before_last_separator, "question without <s>": question_without_cls,
              "separator id 2 hard-coded": hard_coded_sep},
    "09.q3": {"our window": our_window, "ignores exact": ignores_exact, "exact off by one": exact_off_by_one,
              "symmetric look": symmetric_look, "transposed": transposed},
}
