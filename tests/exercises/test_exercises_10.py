"""Checkers of notebook 10 (sliding windows in decoders): classic wrong answers are "incorrect" with a
message naming the case (the reference, the stored solution and the placeholder of every question
are tested in test_exercises.py)."""
from __future__ import annotations

import pytest
import torch
from exercise_helpers import check, solution


# --------------------------------------------------------------------------- 10.q1 the slot of a position
def ring_of_w(position, window, sinks):
    """A ring of w slots: forgets that the query itself is one of the w + 1 keys."""
    return position if position < sinks else sinks + position % max(window, 1)


def no_sink_offset(position, window, sinks):
    return position if position < sinks else position % (window + 1)


def sinks_in_the_ring(position, window, sinks):
    """Sink tokens not kept apart: every position goes round the ring."""
    return sinks + position % (window + 1)


def one_ring_for_all(position, window, sinks):
    return position % (sinks + window + 1)


def ring_from_first_non_sink(position, window, sinks):
    return position if position < sinks else sinks + (position - sinks) % (window + 1)


def as_tensor(position, window, sinks):
    return torch.tensor(solution("10.q1")(position, window, sinks))


@pytest.mark.parametrize("wrong, words", [(ring_of_w, "the last slot before the wrap"),
                                          (no_sink_offset, "the first position after the sinks"),
                                          (sinks_in_the_ring, "a sink token"),
                                          (one_ring_for_all, "the first position after the sinks"),
                                          (ring_from_first_non_sink, "the first position after the sinks"),
                                          (as_tensor, "plain int")])
def test_slot_wrong_answers(wrong, words):
    result = check("10.q1", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 10.q2 one decode step
def _step(q, keys, values, ok, scale=True):
    scores = q @ keys.transpose(-1, -2)                                  # (B, H, 1, N)
    if scale:
        scores = scores / q.shape[-1] ** 0.5
    return scores.masked_fill(~ok, float("-inf")).softmax(-1) @ values   # (B, H, 1, Dh)


def reads_empty_slots(q, keys, values, positions, window, sinks):
    i, j = positions.max(), positions
    return _step(q, keys, values, (j <= i) & ((i - j <= window) | (j < sinks)))


def forgets_sinks(q, keys, values, positions, window, sinks):
    i, j = positions.max(), positions
    return _step(q, keys, values, (j >= 0) & (j <= i) & (i - j <= window))


def window_off_by_one(q, keys, values, positions, window, sinks):
    i, j = positions.max(), positions
    return _step(q, keys, values, (j >= 0) & (j <= i) & ((i - j < window) | (j < sinks)))


def no_scale(q, keys, values, positions, window, sinks):
    i, j = positions.max(), positions
    return _step(q, keys, values, (j >= 0) & (j <= i) & ((i - j <= window) | (j < sinks)), scale=False)


def last_slots_are_the_window(q, keys, values, positions, window, sinks):
    """Slot order taken for position order: the window is the last w + 1 slots."""
    N = positions.numel()
    slot = torch.arange(N)
    return _step(q, keys, values, (positions >= 0) & ((slot >= N - window - 1) | (positions < sinks)))


def every_valid_slot(q, keys, values, positions, window, sinks):
    """Right for a ring (it holds only readable keys), wrong for a cache that holds more."""
    return _step(q, keys, values, positions >= 0)


@pytest.mark.parametrize("wrong, words", [(reads_empty_slots, "a ring not yet full"),
                                          (forgets_sinks, "a ring with sinks, after a wrap"),
                                          (window_off_by_one, "a ring after a wrap"),
                                          (no_scale, "a ring not yet full"),
                                          (last_slots_are_the_window, "every position so far, shuffled"),
                                          (every_valid_slot, "every position so far, shuffled")])
def test_decode_step_wrong_answers(wrong, words):
    result = check("10.q2", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 10.q3 the decoder's mask
def _grid(T):
    return torch.arange(T)[:, None], torch.arange(T)[None, :]


def sinks_before_they_exist(T, window, sinks):
    i, j = _grid(T)
    if window is None:
        return j <= i
    return ((j <= i) & (i - j <= window)) | (j < sinks)


def sliding_window_convention(T, window, sinks):
    """Window read the way a Mistral config counts it: one key short."""
    i, j = _grid(T)
    if window is None:
        return j <= i
    return (j <= i) & ((i - j < window) | (j < sinks))


def none_as_zero(T, window, sinks):
    return solution("10.q3")(T, 0 if window is None else window, sinks)


def sinks_as_global_rows(T, window, sinks):
    """Longformer's global tokens, bidirectional: a sink also reads every later key."""
    i, j = _grid(T)
    if window is None:
        return j <= i
    return ((j <= i) & (i - j <= window)) | (j < sinks) | (i < sinks)


def transposed(T, window, sinks):
    return solution("10.q3")(T, window, sinks).T.contiguous()


@pytest.mark.parametrize("wrong, words", [(sinks_before_they_exist, "a window and two sinks"),
                                          (sliding_window_convention, "a window, no sinks"),
                                          (none_as_zero, "a full layer"),
                                          (sinks_as_global_rows, "a window and two sinks"),
                                          (transposed, "a window, no sinks")])
def test_decoder_mask_wrong_answers(wrong, words):
    result = check("10.q3", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


# --------------------------------------------------------------------------- 10.q4 the sink logit
def ignores_sink(scores, values, sink):
    return torch.einsum("hn,hnd->hd", scores.softmax(-1), values)


def sink_added_to_scores(scores, values, sink):
    return torch.einsum("hn,hnd->hd", (scores + sink[:, None]).softmax(-1), values)


def unstable(scores, values, sink):
    e = torch.exp(torch.cat([scores, sink[:, None]], dim=-1))
    return torch.einsum("hn,hnd->hd", (e / e.sum(-1, keepdim=True))[:, :-1], values)


def renormalised(scores, values, sink):
    """The sink's weight dropped, then the others scaled back to sum to 1: no sink at all."""
    p = torch.cat([scores, sink[:, None]], dim=-1).softmax(-1)[:, :-1]
    return torch.einsum("hn,hnd->hd", p / p.sum(-1, keepdim=True), values)


def sink_with_mean_value(scores, values, sink):
    """The sink treated as a token whose value is the mean value."""
    p = torch.cat([scores, sink[:, None]], dim=-1).softmax(-1)
    return torch.einsum("hn,hnd->hd", p[:, :-1], values) + p[:, -1:] * values.mean(1)


@pytest.mark.parametrize("wrong, words", [(ignores_sink, "one head, four keys"),
                                          (sink_added_to_scores, "one head, four keys"),
                                          (unstable, "large scores"), (renormalised, "one head, four keys"),
                                          (sink_with_mean_value, "one head, four keys")])
def test_sink_logit_wrong_answers(wrong, words):
    result = check("10.q4", wrong)
    assert result.status == "incorrect" and words in result.message, result.message


#: the planted wrong answers, by question (tests/exercises/test_exercises.py checks every question has some)
WRONG = {
    "10.q1": {"a ring of w": ring_of_w, "no sink offset": no_sink_offset, "sinks in the ring": sinks_in_the_ring,
              "one ring for all": one_ring_for_all, "ring from the first non-sink": ring_from_first_non_sink,
              "a tensor": as_tensor},
    "10.q2": {"reads empty slots": reads_empty_slots, "forgets the sinks": forgets_sinks,
              "window off by one": window_off_by_one, "no 1/sqrt(Dh)": no_scale,
              "slot order as position order": last_slots_are_the_window, "every valid slot": every_valid_slot},
    "10.q3": {"sinks before they exist": sinks_before_they_exist, "sliding_window convention": sliding_window_convention,
              "None as 0": none_as_zero, "sinks as global rows": sinks_as_global_rows, "transposed": transposed},
    "10.q4": {"ignores the sink": ignores_sink, "sink added to the scores": sink_added_to_scores,
              "unstable exp": unstable, "renormalised": renormalised, "sink with the mean value": sink_with_mean_value},
}
