"""Exercises for notebook 05, the sparsity pattern zoo: a dilated window, a BigBird mask (window +
global + random blocks) and the number of pairs it keeps."""
from __future__ import annotations

from typing import List

from torch import Tensor

from ..costs import count_allowed
from ..masks import create_mask, generate_dilated_window, hybrid_mask
from ..patterns import bigbird_random_table, generate_block_sparse, layout_from_table
from .cases import Case, Shown, global_mask_of, shown_global_mask
from .compare import compare_int, compare_pairs
from .problem import FunctionProblem

NUMBER = "05"
NOTEBOOK = "05_sparsity_pattern_zoo"
TITLE = "Exercises 05 · The sparsity pattern zoo"
INTRO = """A sliding window is one pattern among many. A *dilated* window skips keys to see further with
the same number of pairs; BigBird adds to the window and the global tokens a few *random blocks*:
each block of `b` queries also reads `n_rand` key blocks drawn at random. Here you build both masks and
count what BigBird keeps."""

#: what already builds the random-block part (hybrid_mask itself is allowed: it calls none of these)
_BLOCK_BUILDERS = ("tutor.patterns.generate_block_sparse", "tutor.patterns.generate_bigbird_random",
                   "tutor.patterns.layout_from_table")


def dilated_mask_reference(T: int, window: int, dilation: int) -> Tensor:
    """(T, T) bool: ``|i - j| <= window * dilation`` and ``(i - j) % dilation == 0``."""
    return create_mask(generate_dilated_window(window, dilation), 1, T)[0]


def bigbird_mask_reference(T: int, window: int, global_mask: Tensor, block_size: int,
                           random_blocks: Tensor) -> Tensor:
    """(B, T, T) bool: window or global or key block in ``random_blocks[query block]``."""
    layout = layout_from_table(random_blocks, random_blocks.shape[0])      # (nb, nb)
    return hybrid_mask(T, window, global_mask, pattern=generate_block_sparse(block_size, layout))


def count_bigbird_pairs_reference(T: int, window: int, global_positions: List[int], block_size: int,
                                  random_blocks: Tensor) -> int:
    """Allowed pairs of one sequence under the BigBird rule, each counted once."""
    gm = global_mask_of(T, global_positions)                               # (1, T)
    return count_allowed(bigbird_mask_reference(T, window, gm, block_size, random_blocks))


def _table(T: int, block_size: int, n_rand: int, seed: int):
    """A seeded BigBird table, built fresh at check time: (ceil(T / b), n_rand) long."""
    return Shown(lambda: bigbird_random_table(T, block_size, n_rand, seed))


class DilatedMask(FunctionProblem):
    id, title, _name = "05.q1", "A dilated window", "dilated_mask"
    _prompt = """Write `dilated_mask(T, window, dilation)` returning a `(T, T)` bool tensor, True where
query `i` may read key `j` in a dilated window: `j = i + k * dilation` for some integer
`k` with `|k| <= window`. Each query still reads `2 * window + 1` keys (fewer at the edges), spread
over `2 * window * dilation + 1` positions. `dilation = 1` is the ordinary sliding window."""
    _solution = '''def dilated_mask(T, window, dilation):
    """(T, T) bool: keys at distance k * dilation, |k| <= window."""
    d = torch.arange(T)[:, None] - torch.arange(T)[None, :]          # (T, T) i - j
    return (d.abs() <= window * dilation) & (d % dilation == 0)       # (T, T)
'''
    _hints = ("Start from the (T, T) table of `i - j`, as for the sliding window.",
              "Two conditions must both hold: the distance is a multiple of `dilation`, and it is at "
              "most `window` steps of `dilation` away.",
              "`(d.abs() <= window * dilation) & (d % dilation == 0)` with `d = i - j`.")
    _congrats = "Same number of pairs as a window of w, but each layer reaches d times further."
    _reference = dilated_mask_reference
    _compare = compare_pairs
    _forbidden = ("tutor.masks.generate_dilated_window", "tutor.masks.hybrid_mask", "tutor.masks.hybrid_mask_mod")
    _cases = (Case("dilation 1 is the sliding window", {"T": 8, "window": 2, "dilation": 1}),
              Case("dilation 2", {"T": 12, "window": 2, "dilation": 2}),
              Case("dilation 3, window 1", {"T": 10, "window": 1, "dilation": 3}),
              Case("window 0", {"T": 6, "window": 0, "dilation": 4}),
              Case("window * dilation >= T", {"T": 7, "window": 3, "dilation": 3}),
              Case("a single token", {"T": 1, "window": 2, "dilation": 2}))


class BigBirdMask(FunctionProblem):
    id, title, _name = "05.q2", "The BigBird mask", "bigbird_mask"
    _prompt = """BigBird allows a pair `(i, j)` when **any** of three rules does: the sliding window
`|i - j| <= window`; a global token (`global_mask[batch, i]` or `global_mask[batch, j]`); or the random
blocks: query `i` lies in block `i // block_size`, and that block reads the key blocks listed in row
`i // block_size` of `random_blocks`, a `(n_blocks, n_rand)` long tensor (the same for every
sequence). Write `bigbird_mask(T, window, global_mask, block_size, random_blocks)` returning the
`(B, T, T)` bool mask. `T` need not be a multiple of `block_size`. You may use `tutor.masks.hybrid_mask`
for the window and the global tokens."""
    _solution = '''from tutor.masks import hybrid_mask

def bigbird_mask(T, window, global_mask, block_size, random_blocks):
    """(B, T, T) bool: window or global or a random key block of the query's block."""
    n_blocks = random_blocks.shape[0]
    layout = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)       # (nb, nb) block -> block
    for n in range(n_blocks):
        layout[n, random_blocks[n]] = True
    block = torch.arange(T) // block_size                             # (T,) block of each position
    random = layout[block[:, None], block[None, :]]                   # (T, T)
    return hybrid_mask(T, window, global_mask) | random[None]         # (B, T, T)
'''
    _hints = ("Build the random part at block level first: an `(n_blocks, n_blocks)` bool table, True "
              "where query block `n` reads key block `m`.",
              "Expand it to positions with `block = torch.arange(T) // block_size`: entry `(i, j)` is "
              "`layout[block[i], block[j]]` (index with a column and a row of blocks).",
              "OR it with `hybrid_mask(T, window, global_mask)`; a pair allowed twice is still one True.")
    _congrats = "Window + global + random: the three ingredients BigBird needs to keep a Transformer's expressiveness."
    _reference = bigbird_mask_reference
    _compare = compare_pairs
    _forbidden = _BLOCK_BUILDERS
    _cases = (Case("one random block each", {"T": 16, "window": 1, "global_mask": shown_global_mask(16, (0,)),
                                               "block_size": 4, "random_blocks": _table(16, 4, 1, 0)}),
              Case("a partial last block", {"T": 18, "window": 2, "global_mask": shown_global_mask(18, (0,), (5, 17)),
                                            "block_size": 4, "random_blocks": _table(18, 4, 2, 1)}),
              Case("no global token, window 0", {"T": 12, "window": 0, "global_mask": shown_global_mask(12, ()),
                                                 "block_size": 3, "random_blocks": _table(12, 3, 1, 2)}),
              Case("no random block", {"T": 10, "window": 1, "global_mask": shown_global_mask(10, (9,)),
                                       "block_size": 5, "random_blocks": _table(10, 5, 0, 3)}),
              Case("blocks of one token", {"T": 9, "window": 1, "global_mask": shown_global_mask(9, (4,), ()),
                                           "block_size": 1, "random_blocks": _table(9, 1, 2, 4)}))


class CountBigBirdPairs(FunctionProblem):
    id, title, _name = "05.q3", "Counting BigBird's pairs", "count_bigbird_pairs"
    _prompt = """For **one** sequence with global tokens at the positions in the list
`global_positions`, write `count_bigbird_pairs(T, window, global_positions, block_size,
random_blocks)` returning, as an `int`, how many `(query, key)` pairs the BigBird rule of question 2
allows. A pair allowed by several rules (a random block overlapping the window, a global key inside a
random block) counts **once**; the last block may be shorter than `block_size`."""
    _solution = '''def count_bigbird_pairs(T, window, global_positions, block_size, random_blocks):
    """Allowed (i, j) pairs of one sequence under window + global + random blocks."""
    gm = torch.zeros(1, T, dtype=torch.bool)
    gm[0, list(global_positions)] = True
    # one mask, then one count: each pair is a single True however many rules allow it
    return int(bigbird_mask(T, window, gm, block_size, random_blocks).sum())
'''
    _hints = ("Adding up 'window pairs + global pairs + random pairs' counts the overlaps twice.",
              "Build the mask of question 2 for a batch of one sequence and count its True entries.",
              "`int(mask.sum())` returns a plain int.")
    _congrats = "About T(2w + 1 + n_rand·b) + 2GT pairs: still linear in T for fixed w, n_rand, b and G."
    _reference = count_bigbird_pairs_reference
    _compare = compare_int
    _forbidden = _BLOCK_BUILDERS + ("tutor.costs.count_allowed",)
    _cases = (Case("no global token", {"T": 16, "window": 1, "global_positions": [], "block_size": 4,
                                       "random_blocks": _table(16, 4, 1, 0)}),
              Case("random blocks overlapping the window", {"T": 12, "window": 3, "global_positions": [0],
                                                            "block_size": 3, "random_blocks": _table(12, 3, 2, 5)}),
              Case("a partial last block", {"T": 18, "window": 2, "global_positions": [0, 17], "block_size": 4,
                                            "random_blocks": _table(18, 4, 2, 1)}),
              Case("no random block", {"T": 10, "window": 1, "global_positions": [3], "block_size": 5,
                                       "random_blocks": _table(10, 5, 0, 3)}),
              Case("a longer sequence", {"T": 64, "window": 2, "global_positions": [0, 1], "block_size": 8,
                                         "random_blocks": _table(64, 8, 2, 6)}))


QUESTIONS = (DilatedMask(), BigBirdMask(), CountBigBirdPairs())
