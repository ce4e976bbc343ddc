"""Exercises for notebook 00, why sparse attention: the local mask, counting pairs, dense memory."""
from __future__ import annotations

from torch import Tensor

from ..costs import count_allowed
from ..masks import hybrid_mask
from .cases import Case
from .compare import compare_int, compare_number, compare_pairs
from .problem import FunctionProblem, ValueProblem

NUMBER = "00"
NOTEBOOK = "00_why_sparse_attention"
TITLE = "Exercises 00 · Why sparse attention"
INTRO = """A dense attention layer lets every query read every key: T² pairs. A sliding window keeps
only the keys within distance `w` of the query. These first exercises build that window mask,
count what it keeps, and put a number on what dense attention costs."""

_MASK_BUILDERS = ("tutor.masks.hybrid_mask", "tutor.masks.hybrid_mask_mod",
                  "tutor.masks.generate_local_window", "tutor.masks.generate_causal_window")


def local_mask_reference(T: int, window: int) -> Tensor:
    """(T, T) bool, True where |i - j| <= window: ``hybrid_mask`` with no global token."""
    return hybrid_mask(T, window)[0]


def count_local_pairs_reference(T: int, window: int) -> int:
    """Number of (query, key) pairs with |i - j| <= window among T positions."""
    return count_allowed(hybrid_mask(T, window))


class LocalMask(FunctionProblem):
    id, title, _name = "00.q1", "The sliding-window mask", "local_mask"
    _prompt = """Write `local_mask(T, window)` returning a `(T, T)` **bool** tensor whose entry
`[i, j]` is `True` when query `i` may attend key `j`, i.e. when `|i - j| <= window`.
Row `i` is query `i`, column `j` is key `j`. Use tensor operations (no Python loop needed)."""
    _solution = '''def local_mask(T, window):
    """(T, T) bool: True where |i - j| <= window."""
    i = torch.arange(T)[:, None]          # (T, 1) query positions
    j = torch.arange(T)[None, :]          # (1, T) key positions
    return (i - j).abs() <= window        # (T, T)
'''
    _hints = ("Make the query positions a column and the key positions a row: broadcasting then "
              "gives you every (i, j) pair at once.",
              "`torch.arange(T)[:, None] - torch.arange(T)[None, :]` is the (T, T) table of `i - j`.",
              "Compare the absolute value of that table with `window` using `<=` (the window includes "
              "distance w itself). The comparison already gives a bool tensor.")
    _congrats = "Each row has at most 2w + 1 True entries, fewer near the edges."
    _reference = local_mask_reference
    _compare = compare_pairs
    _forbidden = _MASK_BUILDERS
    _cases = (Case("a small window", {"T": 6, "window": 1}),
              Case("window 0", {"T": 5, "window": 0}),
              Case("window >= T", {"T": 4, "window": 6}),
              Case("a longer sequence", {"T": 11, "window": 3}),
              Case("a single token", {"T": 1, "window": 2}))


class CountLocalPairs(FunctionProblem):
    id, title, _name = "00.q2", "Counting the pairs a window keeps", "count_local_pairs"
    _prompt = """Write `count_local_pairs(T, window)` returning, as an `int`, how many (query, key)
pairs the sliding window allows among `T` tokens. Mind the edges: the first and last queries have
fewer than `2w + 1` keys. It must also be right when `window >= T`."""
    _solution = '''def count_local_pairs(T, window):
    """Number of (i, j) pairs with |i - j| <= window, 0 <= i, j < T."""
    w = min(window, T - 1)                 # a window wider than the sequence adds nothing
    # every row would hold 2w + 1 keys; the edges lose 1 + 2 + ... + w keys on each side
    return T * (2 * w + 1) - w * (w + 1)
'''
    _hints = ("Count per query: query i sees keys max(0, i - w) ... min(T - 1, i + w).",
              "Away from the edges a query sees 2w + 1 keys. The first w queries miss w, w - 1, ..., 1 "
              "keys on the left, and the last w queries as many on the right: w(w + 1) in total.",
              "When window >= T the closed form T(2w + 1) - w(w + 1) breaks: no query can see more "
              "than T keys, so use w = min(window, T - 1).")
    _congrats = "That is about T(2w + 1): linear in T, where dense attention is T²."
    _reference = count_local_pairs_reference
    _compare = compare_int
    _forbidden = _MASK_BUILDERS + ("tutor.costs.hybrid_pairs",)   # the closed form counts the pairs too
    _cases = (Case("a small window", {"T": 10, "window": 2}),
              Case("window 0", {"T": 7, "window": 0}),
              Case("window = T - 1", {"T": 5, "window": 4}),
              Case("window >= T", {"T": 5, "window": 7}),
              Case("window much larger than T", {"T": 3, "window": 100}),
              Case("a longer sequence", {"T": 100, "window": 8}),
              Case("a single token", {"T": 1, "window": 3}))


class DenseMemory(ValueProblem):
    id, title, _name = "00.q3", "What one dense score tensor costs", "dense_mib"
    _prompt = """A model with `H = 12` heads reads a sequence of `T = 4096` tokens. How many **MiB**
(1 MiB = 2²⁰ bytes) does one float32 score tensor of shape `(H, T, T)` take? Set `dense_mib` to
the number."""
    _stub = "dense_mib = ____  # a number, in MiB\n"
    _solution = "H, T = 12, 4096\ndense_mib = H * T * T * 4 / 2**20   # 4 bytes per float32\n"
    _hints = ("Count the elements first: H · T · T.",
              "Each float32 element takes 4 bytes; divide the bytes by 2**20 to get MiB.")
    _congrats = "768 MiB for the scores of one layer and one sequence; at T = 16384 it is 12 GiB."
    _value = 768.0
    _compare = compare_number
    _mistakes = {805.306368: "that is in MB (10**6 bytes); the question asks for MiB (2**20 bytes).",
                 192.0: "that counts elements in units of 2**20; each float32 element takes 4 bytes.",
                 64.0: "that is a single head; there are 12.",
                 1536.0: "float32 takes 4 bytes, not 8."}


QUESTIONS = (LocalMask(), CountLocalPairs(), DenseMemory())
