"""Checkers of notebooks 05 (pattern zoo) and 06 (training): classic wrong answers are "incorrect" with
a message naming the case (the reference, the stored solution and the placeholder of every question
are tested in test_exercises.py); 06.q3 is judged by behaviour, so every mask that lets
every position (the marker could be anywhere) reach [CLS] within the budget passes and the others
fail with a reason."""
from __future__ import annotations

import math

import pytest
from exercise_helpers import check, solution
import torch

from tutor import exercises
from tutor.exercises.cases import Case
from tutor.exercises.nb06 import compare_global_choice
from tutor.masks import hybrid_mask
from tutor.training import MarkerTask, make_batch


QIDS = [q.id for q in exercises.questions() if q.id[:2] in ("05", "06")]


# --------------------------------------------------------------------------- wrong answers
def _d(T):
    return torch.arange(T)[:, None] - torch.arange(T)[None, :]             # (T, T) i - j


def _random_part(T, bs, rb, mode="blocks"):
    """(T, T) bool random part; mode "positions" reads the table entries as key positions."""
    nb = rb.shape[0]
    layout = torch.zeros(nb, nb, dtype=torch.bool)
    for n in range(nb):
        layout[n, rb[n]] = True
    if mode == "transposed":
        layout = layout.T
    blk = torch.arange(T) // bs
    if mode == "positions":
        return torch.stack([torch.isin(torch.arange(T), rb[blk[i]]) for i in range(T)])
    return layout[blk[:, None], blk[None, :]]


def _bigbird(T, w, gm, bs, rb, mode="blocks", rows=True):
    m = (_d(T).abs() <= w)[None] | gm[:, None, :]
    if rows:
        m = m | gm[:, :, None]
    return m | _random_part(T, bs, rb, mode)[None] if mode != "none" else m     # (B, T, T)


def _gm(T, g):
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, list(g)] = True
    return gm


def _count_parts(T, w, g, bs, rb):
    """Window + globals counted once, then every random pair added on top (overlaps twice)."""
    base = int(hybrid_mask(T, w, _gm(T, g)).sum())
    return base + int(_random_part(T, bs, rb).sum())


def _count_full_blocks(T, w, g, bs, rb):
    """As if the last block were full: pads T up to a multiple of the block size."""
    Tp = rb.shape[0] * bs
    return int(_bigbird(Tp, w, _gm(Tp, g), bs, rb).sum())


def _reach(T, w, gm, L, mode):
    allowed = hybrid_mask(T, w, None if mode == "no_globals" else gm)
    if mode == "rows_only":
        allowed = hybrid_mask(T, w) | gm[:, :, None]
    reached = torch.zeros(gm.shape, dtype=torch.bool)
    reached[:, 0] = True
    for _ in range(L - 1 if mode == "one_short" else L):
        reached = (reached[:, :, None] & allowed).any(1)
    if mode == "any_global_all":
        reached = reached | gm.any(1, keepdim=True)
    return reached


def _marker_global(tokens, window, n_layers):
    return (tokens >= 1) & (tokens <= 2)                                   # the marker itself (2 classes)


def _one_hot(tokens, pos):
    gm = torch.zeros(tokens.shape, dtype=torch.bool)
    gm[:, pos] = True
    return gm


WRONG = {
    "05.q1": {"span not widened": lambda T, w, d: (_d(T).abs() <= w) & (_d(T) % d == 0),
              "plain window of w*d": lambda T, w, d: _d(T).abs() <= w * d,
              "every d-th key, unbounded": lambda T, w, d: _d(T) % d == 0,
              "off-by-one span": lambda T, w, d: (_d(T).abs() < w * d) & (_d(T) % d == 0),
              "int mask": lambda T, w, d: ((_d(T).abs() <= w * d) & (_d(T) % d == 0)).long()},
    "05.q2": {"table read as key positions": lambda T, w, gm, bs, rb: _bigbird(T, w, gm, bs, rb, "positions"),
              "layout transposed": lambda T, w, gm, bs, rb: _bigbird(T, w, gm, bs, rb, "transposed"),
              "random part forgotten": lambda T, w, gm, bs, rb: _bigbird(T, w, gm, bs, rb, "none"),
              "global rows forgotten": lambda T, w, gm, bs, rb: _bigbird(T, w, gm, bs, rb, rows=False),
              "first sequence only": lambda T, w, gm, bs, rb: _bigbird(T, w, gm, bs, rb)[0]},
    "05.q3": {"random pairs added on top": _count_parts,
              "random part ignored": lambda T, w, g, bs, rb: int(hybrid_mask(T, w, _gm(T, g)).sum()),
              "last block counted as full": _count_full_blocks,
              "float count": lambda T, w, g, bs, rb: float(solution("05.q3")(T, w, g, bs, rb))},
    "06.q1": {"floor": lambda p, q, w: abs(p - q) // w,
              "floor plus one": lambda p, q, w: abs(p - q) // w + 1,
              "window counted both ways": lambda p, q, w: math.ceil(abs(p - q) / (2 * w)),
              "float": lambda p, q, w: abs(p - q) / w},
    "06.q2": {"globals ignored": lambda T, w, gm, L: _reach(T, w, gm, L, "no_globals"),
              "one layer short": lambda T, w, gm, L: _reach(T, w, gm, L, "one_short"),
              "global keys not read by everyone": lambda T, w, gm, L: _reach(T, w, gm, L, "rows_only"),
              "one global token reaches everything": lambda T, w, gm, L: _reach(T, w, gm, L, "any_global_all")},
    "06.q3": {"no global token": lambda tok, w, L: torch.zeros(tok.shape, dtype=torch.bool),
              "the last position global": lambda tok, w, L: _one_hot(tok, -1),
              "position 1 instead of [CLS]": lambda tok, w, L: _one_hot(tok, 1),
              "every token global": lambda tok, w, L: torch.ones(tok.shape, dtype=torch.bool),
              "only class-1 markers global": lambda tok, w, L: tok == 1,
              "an int mask": lambda tok, w, L: _one_hot(tok, 0).long(),
              "the marker made global (peeking)": lambda tok, w, L: _marker_global(tok, w, L)},
}


def test_every_question_has_three_wrong_answers():
    assert set(WRONG) == set(QIDS) and all(len(v) >= 3 for v in WRONG.values())


@pytest.mark.parametrize("qid, label", [(qid, label) for qid, d in WRONG.items() for label in d])
def test_classic_wrong_answer_is_incorrect(qid, label):
    r = check(qid, WRONG[qid][label])
    assert r.status == "incorrect", f"{qid} accepted the wrong answer '{label}'"
    assert "case '" in r.message


def test_wrong_answer_messages_are_specific():
    assert "float" in check("06.q1", WRONG["06.q1"]["float"]).message
    assert "budget is one per sequence" in check("06.q3", WRONG["06.q3"]["every token global"]).message
    msg = check("06.q3", WRONG["06.q3"]["the last position global"]).message
    assert "cannot reach [CLS] in 1 layer(s)" in msg and "global tokens at [63]" in msg
    assert "dtype" in check("06.q3", WRONG["06.q3"]["an int mask"]).message
    assert "shape" in check("05.q2", WRONG["05.q2"]["first sequence only"]).message


# --------------------------------------------------------------------------- 06.q3 judged by behaviour
def test_peeking_at_the_marker_is_named():
    msg = check("06.q3", _marker_global).message
    assert "does not know where the marker is" in msg and "every position reach [CLS]" in msg


def test_other_good_choices_pass():
    q = exercises.question("06.q3")
    two_layers = [c for c in q._cases if c.values["n_layers"] == 2]
    assert two_layers
    for case in two_layers:                                                # any single hub works with 2 layers
        tokens = case.tensors()["tokens"]
        for pos in (1, tokens.shape[1] // 2, tokens.shape[1] - 1):
            assert compare_global_choice(_one_hot(tokens, pos), _one_hot(tokens, 0), case) is None


def test_a_marker_inside_the_window_needs_no_global():
    def batch(part):                                                       # 0: tokens, 2: marker positions
        return lambda: make_batch(MarkerTask(T=40, min_distance=3), 4, torch.Generator().manual_seed(5))[part]
    case = Case("near", {"tokens": batch(0), "window": 40, "n_layers": 1, "marker_pos": batch(2)})
    tokens = case.tensors()["tokens"]
    assert compare_global_choice(torch.zeros(tokens.shape, dtype=torch.bool), _one_hot(tokens, 0), case) is None
    far = Case("far", {**case.values, "window": 1})
    assert "cannot reach" in compare_global_choice(torch.zeros(tokens.shape, dtype=torch.bool),
                                                   _one_hot(tokens, 0), far)


def test_checks_use_fresh_seeded_batches():
    q = exercises.question("06.q3")
    a, b = q._cases[0].tensors()["tokens"], q._cases[0].tensors()["tokens"]
    assert a is not b and torch.equal(a, b)
    pos = q._cases[0].tensors()["marker_pos"]
    assert bool(((a[torch.arange(len(pos)), pos] >= 1) & (a[torch.arange(len(pos)), pos] <= 2)).all())


def test_random_blocks_are_shown_in_the_case():
    for qid in ("05.q2", "05.q3"):
        labels = [c.label for c in exercises.question(qid)._cases]
        assert all("random_blocks=[[" in label for label in labels if "no random block" not in label)
    label = exercises.question("05.q2")._cases[1].label
    assert "global_mask=True at [[0], [5, 17]]" in label
