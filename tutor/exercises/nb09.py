"""Exercises for notebook 09, into real models: a window in flash-attn's words, Longformer's
global_attention_mask for question answering, and the pairs lucidrains' local-attention reads."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..conventions import (flash_pairs, from_longformer, from_sliding_window, local_attention_pairs,
                           qa_global_attention_mask, to_flash_window_size)
from .cases import Case
from .compare import as_int, compare_pairs, compare_tensor, shown, type_name
from .problem import FunctionProblem

NUMBER = "09"
NOTEBOOK = "09_into_real_models"
TITLE = "Exercises 09 · Into real models"
INTRO = """Every library counts the window its own way: Longformer's `attention_window` is the total width
`2w`, a Mistral `sliding_window` counts the query itself, flash-attn's `window_size=(left, right)` is
inclusive on both sides, lucidrains' `local-attention` reads whole buckets. These exercises move a
window between conventions without an off-by-one, choose Longformer's global tokens for question
answering, and predict which pairs a library setting allows."""


# --------------------------------------------------------------------------- q1: a window in flash-attn's words
def to_flash_reference(library: str, value: int) -> Tuple[int, int, bool]:
    """``(left, right, causal)`` for flash-attn that reads exactly the pairs of ``library``'s ``value``."""
    if library == "longformer":
        return (*to_flash_window_size(from_longformer(value)), False)
    if library == "mistral":
        return (*to_flash_window_size(from_sliding_window(value), causal=True), True)
    return (*to_flash_window_size(value), False)                           # "tutor": our w


def _flash_T(case) -> int:
    return 2 * case.values["value"] + 7                                  # every edge and the interior


def compare_flash(got, expected: Tuple[int, int, bool], case) -> Optional[str]:
    """(left, right, causal): ints and a bool, judged by the pairs flash-attn would read."""
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return f"you returned {shown(got)} ({type_name(got)}); return a tuple (left, right, causal)."
    left, right, causal = got
    if as_int(left) is None or as_int(right) is None:
        return f"left and right must be ints (flash-attn counts keys), got {shown(left)} and {shown(right)}."
    if not isinstance(causal, bool):
        return f"causal must be a bool, got {shown(causal)} ({type_name(causal)})."
    T = _flash_T(case)
    # flash-attn reads a negative side as unlimited, and a side past T as all of T: same pairs, no overflow
    sides = [-1 if w < 0 else min(w, T) for w in (as_int(left), as_int(right))]
    problem = compare_pairs(flash_pairs(T, *sides, causal), flash_pairs(T, *expected), case)
    if problem:
        return f"flash-attn with window_size=({shown(left)}, {shown(right)}), causal={causal} at T={T}: " + problem
    return None


class ToFlash(FunctionProblem):
    id, title, _name = "09.q1", "A window in flash-attn's words", "to_flash"
    _prompt = """flash-attn's `flash_attn_func(q, k, v, causal=..., window_size=(left, right))` lets query `i` read
the keys `i - left ... i + right`, **both ends inclusive** (and only `j <= i` when `causal=True`).
Write `to_flash(library, value)` returning `(left, right, causal)` that reads exactly the same pairs as:

* `library == "longformer"`: Longformer's `attention_window = value` (the *total* width of the window);
* `library == "mistral"`: a Mistral/Gemma config's `sliding_window = value` (causal; the query itself
  is one of the `sliding_window` keys it sees);
* `library == "tutor"`: our `window = value` (`|i - j| <= w`, not causal)."""
    _solution = '''def to_flash(library, value):
    """(left, right, causal) for flash-attn reading the same pairs as `library`'s `value`."""
    if library == "longformer":
        w = value // 2                 # attention_window is the total width 2w
        return (w, w, False)
    if library == "mistral":
        return (value - 1, 0, True)    # sliding_window counts the query itself
    return (value, value, False)       # ours: w keys on each side
'''
    _hints = ("Write each library's rule as an inequality on `i - j`, then read `left` and `right` off it.",
              "Longformer: `attention_window` = 2w, so w = attention_window // 2 on each side. Mistral: "
              "`i - sliding_window < j <= i`.",
              "`j > i - sliding_window` is `j >= i - (sliding_window - 1)`: left = sliding_window - 1, right = 0, "
              "causal = True.")
    _congrats = ("transformers itself passes `(sliding_window - 1, sliding_window - 1)` to flash-attn; with "
                 "causal=True the right side never matters.")
    _reference = to_flash_reference
    _forbidden = ("tutor.conventions.to_flash_window_size", "tutor.conventions.from_longformer",
                  "tutor.conventions.from_sliding_window", "tutor.conventions.windows.to_flash_window_size",
                  "tutor.conventions.windows.from_longformer", "tutor.conventions.windows.from_sliding_window")
    _compare = compare_flash
    _cases = (Case("Longformer attention_window=8", {"library": "longformer", "value": 8}),
              Case("Longformer attention_window=2", {"library": "longformer", "value": 2}),
              Case("Mistral sliding_window=5", {"library": "mistral", "value": 5}),
              Case("Mistral sliding_window=1 (only itself)", {"library": "mistral", "value": 1}),
              Case("ours, window=3", {"library": "tutor", "value": 3}),
              Case("ours, window=0", {"library": "tutor", "value": 0}),
              Case("Longformer attention_window=64", {"library": "longformer", "value": 64}),
              Case("Mistral sliding_window=33", {"library": "mistral", "value": 33}))


# --------------------------------------------------------------------------- q2: global tokens for QA
def _qa_ids(rows, T: int, sep: int = 2, pad: int = 1):
    """input_ids (B, T): ``<s> question </s></s> context </s> <pad>...`` for (question, context) lengths."""
    def build():
        g = torch.Generator().manual_seed(T)
        ids = torch.full((len(rows), T), pad, dtype=torch.long)
        for b, (nq, nc) in enumerate(rows):
            seq = [0] + torch.randint(3, 50, (nq,), generator=g).tolist() + [sep, sep] \
                + torch.randint(3, 50, (nc,), generator=g).tolist() + [sep]
            ids[b, :len(seq)] = torch.tensor(seq)
        return ids
    return build


class QAGlobalMask(FunctionProblem):
    id, title, _name = "09.q2", "Longformer's global tokens for question answering", "qa_global_mask"
    _prompt = """For question answering, Longformer gives global attention to the `<s>` token and to every
question token, and keeps the context local. A batch of `input_ids` (B, T) is laid out per sequence as
`<s> question </s></s> context </s> <pad> ...` (`<s>` is id 0, `</s>` is `sep_token_id`, questions have
different lengths). Write `qa_global_mask(input_ids, sep_token_id)` returning the
`global_attention_mask` that `LongformerModel` takes: a `torch.long` tensor (B, T), 1 on `<s>` and the
question, 0 elsewhere (separators, context, padding)."""
    _solution = '''def qa_global_mask(input_ids, sep_token_id):
    """(B, T) long: 1 on <s> and the question tokens, 0 elsewhere."""
    B, T = input_ids.shape
    first_sep = (input_ids == sep_token_id).int().argmax(dim=1, keepdim=True)   # (B, 1)
    positions = torch.arange(T)[None, :]                                           # (1, T)
    return (positions < first_sep).long()                                          # (B, T)
'''
    _hints = ("Everything before the first separator of a sequence is global; find that position per row.",
              "`(input_ids == sep_token_id).int().argmax(dim=1)` is the first separator of each row "
              "(argmax returns the first maximum).",
              "Compare `torch.arange(T)[None, :]` with the first separator `[:, None]`, strictly less than, "
              "and turn the bool result into `.long()`: Longformer wants integers.")
    _congrats = ("transformers' LongformerForQuestionAnswering builds the same mask itself when you pass "
                 "none; for classification, only `<s>` is global.")
    _reference = qa_global_attention_mask
    _compare = compare_tensor
    _cases = (Case("one sequence", {"input_ids": _qa_ids([(3, 4)], 12), "sep_token_id": 2}),
              Case("questions of different lengths, padding", {"input_ids": _qa_ids([(2, 3), (5, 6), (1, 2)], 16),
                                                               "sep_token_id": 2}),
              Case("an empty question", {"input_ids": _qa_ids([(0, 5), (3, 1)], 12), "sep_token_id": 2}),
              Case("another separator id", {"input_ids": _qa_ids([(4, 3), (2, 2)], 12, sep=99), "sep_token_id": 99}),
              Case("a long context", {"input_ids": _qa_ids([(6, 200), (12, 150)], 220), "sep_token_id": 2}))


# --------------------------------------------------------------------------- q3: local-attention's pairs
class LocalAttentionPairs(FunctionProblem):
    id, title, _name = "09.q3", "Which pairs does local-attention read?", "local_attention_pairs"
    _prompt = """lucidrains' `LocalAttention(window_size, look_backward, look_forward, exact_windowsize)` cuts the
sequence into buckets of `window_size` positions (`T` is a multiple of it). A query in bucket `q` reads
every key of buckets `q - look_backward ... q + look_forward` (those that exist). With
`exact_windowsize=True` it then drops the keys with `i - j > window_size * look_backward` or
`j - i > window_size * look_forward`. Write `local_attention_pairs(T, window_size, look_backward,
look_forward, exact_windowsize)` returning the bool (T, T) table, True where query `i` reads key `j`
(not causal)."""
    _solution = '''def local_attention_pairs(T, window_size, look_backward, look_forward, exact_windowsize):
    """(T, T) bool: True where query i reads key j."""
    i = torch.arange(T)[:, None]                      # (T, 1) queries
    j = torch.arange(T)[None, :]                      # (1, T) keys
    bq, bk = i // window_size, j // window_size       # buckets
    ok = (bk >= bq - look_backward) & (bk <= bq + look_forward)
    if exact_windowsize:
        ok &= (i - j <= window_size * look_backward) & (j - i <= window_size * look_forward)
    return ok
'''
    _hints = ("Compute the bucket of every query and every key with `// window_size`.",
              "Whole buckets: `bucket_k >= bucket_q - look_backward` and `bucket_k <= bucket_q + look_forward`, "
              "on a (T, 1) against (1, T) grid.",
              "Without `exact_windowsize`, how far a query reaches depends on its place in its bucket: that is "
              "why only `exact_windowsize=True` equals our sliding window.")
    _congrats = ("With window_size = w, look 1/1 and exact_windowsize=True this is our |i - j| <= w: "
                 "`tutor.conventions.to_local_attention(w)`.")
    _reference = local_attention_pairs
    _args = ("T", "window_size", "look_backward", "look_forward", "exact_windowsize")
    _compare = compare_pairs
    _cases = Case.table(("T", "window_size", "look_backward", "look_forward", "exact_windowsize"), (
        ("whole buckets, one on each side", (12, 4, 1, 1, False)),
        ("exact window", (12, 4, 1, 1, True)),
        ("two buckets back, none forward", (15, 3, 2, 0, False)),
        ("two back exact", (15, 3, 2, 0, True)),
        ("buckets of one token", (6, 1, 1, 1, False)),
        ("no look-around", (8, 4, 0, 0, False)),
        ("asymmetric, exact", (20, 5, 1, 2, True)),
        ("one bucket only", (4, 4, 1, 1, False))))


QUESTIONS = (ToFlash(), QAGlobalMask(), LocalAttentionPairs())
