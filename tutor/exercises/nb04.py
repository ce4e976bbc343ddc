"""Exercises for notebook 04, the memory-linear blocked hybrid: key spans, the band inside a
block, blocked attention with global columns and dense global rows, a memory estimate."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor

from ..attention.blocked import blocked_hybrid_attention
from ..masks import generate_causal_window, generate_local_window
from .cases import HYBRID_CASES, AttnCase, Case
from .compare import as_int, compare_int, compare_windows
from .footprint import builds_square
from .problem import AttentionProblem, FunctionProblem

NUMBER = "04"
NOTEBOOK = "04_gpu_hybrid"
TITLE = "Exercises 04 · The memory-linear blocked hybrid"
INTRO = """The blocked hybrid cuts the queries into blocks of `b`. Block `n` (queries `n·b ... n·b + b - 1`)
only needs the keys `n·b - w ... n·b + b - 1 + w`: a *key span* of `b + 2w`. Scores are `b × (b + 2w)`
per block, plus `G` global columns; the `G` global rows are one dense pass. Nothing of size `T × T`
is ever built."""


def key_span_reference(n: int, block_size: int, window: int, T: int):
    """Half-open range (start, stop) of the keys query block n needs, clipped to 0..T."""
    return max(0, n * block_size - window), min(T, (n + 1) * block_size + window)


def block_band_mask_reference(block_size: int, window: int, causal: bool) -> Tensor:
    """(b, b+2w) bool: query offset a may attend span slot c (key offset c - w), by the mask mods."""
    a = torch.arange(block_size)[:, None]                                   # (b, 1)
    c = torch.arange(block_size + 2 * window)[None, :]                      # (1, b+2w)
    mod = generate_causal_window(window) if causal else generate_local_window(window)
    return mod(0, 0, a, c - window).expand(block_size, -1).clone()          # (b, b+2w)


def blocked_hybrid_attention_reference(q, k, v, window, global_mask, block_size):
    """The attention of docs/spec.md (non-causal, no padding) with the blocked backend: (B, H, T, Dh)."""
    return blocked_hybrid_attention(q, k, v, window, global_mask, block_size=block_size)


def blocked_score_elements_reference(B: int, H: int, T: int, window: int, block_size: int, G: int) -> int:
    """Score entries of all query blocks at once (last block padded) plus the G dense global rows."""
    n_blocks = math.ceil(T / block_size)
    return B * H * (n_blocks * block_size * (block_size + 2 * window + G) + G * T)


def compare_span(got, expected, case) -> Optional[str]:
    """A pair of ints (start, stop), stop exclusive."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"return a pair (start, stop), not a {type(got).__name__}."
    start, stop = (as_int(x) for x in got)
    if start is None or stop is None:
        return "start and stop should both be ints."
    if start != expected[0]:
        return f"start {start} is not right (remember to clip at 0)."
    if stop == expected[1] - 1:
        return f"stop {stop} looks inclusive: make it one past the last key, like `range`."
    if stop != expected[1]:
        return f"stop {stop} is not right (remember to clip at T)."
    return None


_BLOCKS = (4, 3, 5, 1, 16, 4)


class KeySpan(FunctionProblem):
    id, title, _name = "04.q1", "The key span of a query block", "key_span"
    _prompt = """Write `key_span(n, block_size, window, T)` returning `(start, stop)`: the half-open
range of key positions query block `n` needs (its queries are `n*block_size ... n*block_size +
block_size - 1`, each reading keys within `window`), clipped to the sequence `0 ... T-1`. The
last block may be shorter than `block_size`."""
    _solution = '''def key_span(n, block_size, window, T):
    """(start, stop): the keys block n needs, stop exclusive, clipped to 0..T."""
    first, last = n * block_size, (n + 1) * block_size - 1        # query positions of block n
    return max(0, first - window), min(T, last + window + 1)
'''
    _hints = ("The first query of the block reads back to `n*b - window`; the last one reads up to "
              "`n*b + b - 1 + window`.",
              "Half-open means stop = last key + 1. Clip with `max(0, ...)` and `min(T, ...)`.")
    _congrats = "Before clipping the span always has b + 2w keys: that fixed width is what makes blocks batchable."
    _reference = key_span_reference
    _compare = compare_span
    _cases = (Case("the first block", {"n": 0, "block_size": 4, "window": 2, "T": 20}),
              Case("a middle block", {"n": 2, "block_size": 4, "window": 2, "T": 20}),
              Case("the last, partial block", {"n": 4, "block_size": 4, "window": 2, "T": 18}),
              Case("window 0", {"n": 1, "block_size": 5, "window": 0, "T": 12}),
              Case("a window wider than the block", {"n": 1, "block_size": 2, "window": 5, "T": 30}),
              Case("window >= T", {"n": 0, "block_size": 8, "window": 20, "T": 6}))


class BlockBandMask(FunctionProblem):
    id, title, _name = "04.q2", "The local band inside a block", "block_band_mask"
    _prompt = """Inside block `n`, query offset `a` (query `n*b + a`) meets span slot `c`, which holds
key `n*b - w + c`. Write `block_band_mask(block_size, window, causal)` returning the `(b, b + 2w)`
bool tensor that is True where the local rule allows the pair: `|i - j| <= w`, or with
`causal=True`, `0 <= i - j <= w`. It is the same for every block (edges are handled separately)."""
    _solution = '''def block_band_mask(block_size, window, causal):
    """(b, b+2w) bool: local rule between query offset a and span slot c."""
    a = torch.arange(block_size)[:, None]                    # (b, 1) query offsets
    c = torch.arange(block_size + 2 * window)[None, :]       # (1, b+2w) span slots
    d = a - (c - window)                                     # (b, b+2w) i - j
    return (d >= 0) & (d <= window) if causal else d.abs() <= window
'''
    _hints = ("i - j = (n*b + a) - (n*b - w + c) = a - c + w: n drops out.",
              "Broadcast a (b, 1) column of a against a (1, b + 2w) row of c, then apply the rule to "
              "d = a - c + w.")
    _congrats = "A diagonal band of width 2w + 1 (or w + 1 when causal) inside a b × (b + 2w) tile."
    _reference = block_band_mask_reference
    _compare = compare_windows
    _forbidden = ("tutor.masks.generate_local_window", "tutor.masks.generate_causal_window")
    _cases = (Case("a small block", {"block_size": 4, "window": 2, "causal": False}),
              Case("a small block, causal", {"block_size": 4, "window": 2, "causal": True}),
              Case("window 0", {"block_size": 3, "window": 0, "causal": False}),
              Case("a window wider than the block", {"block_size": 2, "window": 5, "causal": False}),
              Case("a bigger block, causal", {"block_size": 8, "window": 3, "causal": True}))


class BlockedHybridAttention(AttentionProblem):
    id, title, _name = "04.q3", "Blocked hybrid attention", "blocked_hybrid_attention"
    _prompt = """Write `blocked_hybrid_attention(q, k, v, window, global_mask, block_size)` → `(B, H, T,
Dh)`, equal to dense hybrid attention but working block by block: for each query block, scores
against its key span (mask the band, positions outside `0..T-1` and global keys) and against the `G`
global keys as extra columns, one softmax; then the global rows, densely. `T` need not be a
multiple of `block_size`. Allowed helpers: `masked_softmax`, `global_index`, `gather_tokens`
from `tutor.attention.softmax` and `tutor.attention.global_tokens`, and your `block_band_mask`.
Never build the `(T, T)` scores: the check also runs your function at T = 128 and looks at the
largest tensor it creates."""
    _solution = '''import math
import torch.nn.functional as F
from tutor.attention.softmax import masked_softmax
from tutor.attention.global_tokens import gather_tokens, global_index

def blocked_hybrid_attention(q, k, v, window, global_mask, block_size):
    """(B, H, T, Dh): query blocks against key spans + global columns; global rows dense."""
    B, H, T, Dh = q.shape
    b, w, scale = block_size, window, Dh ** -0.5
    band = block_band_mask(b, w, False)                                   # (b, b+2w)
    idx, valid = global_index(global_mask)                                # (B, G), (B, G)
    k_g, v_g = gather_tokens(k, idx), gather_tokens(v, idx)               # (B, H, G, Dh)
    G = idx.shape[1]
    # pad so every span is in range: key j sits at padded position j + w
    kp, vp = F.pad(k, (0, 0, w, w + b)), F.pad(v, (0, 0, w, w + b))       # (B, H, T+2w+b, Dh)
    local_key = F.pad(~global_mask, (w, w + b), value=False)              # (B, T+2w+b) real, not global
    out = torch.zeros_like(q)                                             # (B, H, T, Dh)
    for n in range(math.ceil(T / b)):
        t0, t1 = n * b, min(T, (n + 1) * b)                               # queries of block n
        span = slice(t0, t0 + b + 2 * w)                                  # keys t0-w .. t0+b-1+w
        qb = q[:, :, t0:t1]                                               # (B, H, nq, Dh)
        s_loc = qb @ kp[:, :, span].transpose(-1, -2) * scale             # (B, H, nq, b+2w)
        ok_loc = band[: t1 - t0] & local_key[:, None, span]               # (B, nq, b+2w)
        s_glob = qb @ k_g.transpose(-1, -2) * scale                       # (B, H, nq, G)
        ok_glob = valid[:, None, :].expand(-1, t1 - t0, -1)               # (B, nq, G)
        p = masked_softmax(torch.cat([s_loc, s_glob], -1),
                           torch.cat([ok_loc, ok_glob], -1)[:, None])     # (B, H, nq, b+2w+G)
        p_loc, p_glob = p.split([b + 2 * w, G], dim=-1)
        out[:, :, t0:t1] = p_loc @ vp[:, :, span] + p_glob @ v_g         # (B, H, nq, Dh)
    for s in range(B):                                                    # global rows: dense, G x T
        pos = global_mask[s].nonzero().flatten()                          # (G_s,)
        p_rows = torch.softmax(q[s, :, pos] @ k[s].transpose(-1, -2) * scale, dim=-1)  # (H, G_s, T)
        out[s, :, pos] = p_rows @ v[s]                                    # (H, G_s, Dh)
    return out
'''
    _hints = ("Pad K and V with w zeros in front (and enough at the back) so the span of block n is "
              "simply padded positions `n*b ... n*b + b + 2w - 1`; pad a 'real, non-global key' flag "
              "the same way, with False.",
              "Per block: local scores (nq, b + 2w) masked by your band AND the padded flag; global "
              "scores (nq, G) masked by `valid`; one `masked_softmax` over both.",
              "The last block may have fewer than b queries: slice the band rows with `band[:nq]`. "
              "Then overwrite the global rows with a dense softmax over all keys.")
    _congrats = ("tutor's blocked backend works the same way: one block of scores at a time, so its memory is "
                 "O(T·(b + 2w + G)) rather than T × T.")
    _reference = blocked_hybrid_attention_reference
    _cases = tuple(replace(case, block_size=b) for case, b in zip(HYBRID_CASES, _BLOCKS))
    _probe = AttnCase("memory probe", T=128, window=2, globals_=((1, 64),), H=1, Dh=4, block_size=8)

    def _check(self, fn):
        result = super()._check(fn)
        if result.status != "correct":
            return result
        problem, largest = builds_square(fn, tuple(self._arguments(self._probe).values()), self._probe.T,
                                         self._probe.B * self._probe.H)
        if problem:
            return self._result("incorrect", problem)
        if largest:                        # say it only when the answer's own operations were seen
            probe = self._probe
            return self._result("correct", f"{result.message} At T = {probe.T} your code's largest tensor held "
                                           f"{largest:,} elements, where the (T, T) scores would hold "
                                           f"{probe.B * probe.H * probe.T ** 2:,}.")
        return result


class BlockedScoreElements(FunctionProblem):
    id, title, _name = "04.q4", "A memory estimate", "blocked_score_elements"
    _prompt = """How many float32 score entries does the blocked hybrid hold if it processes **all**
query blocks at once? Write `blocked_score_elements(B, H, T, window, block_size, G)` → `int`:
per batch element and head, `ceil(T / b)` blocks of `b` query rows (the last block is padded to `b`)
with `b + 2w` span columns plus `G` global columns each, plus the `G` dense global rows of `T` keys."""
    _solution = '''def blocked_score_elements(B, H, T, window, block_size, G):
    """Score entries of the blocked hybrid: all blocks at once plus the global rows."""
    n_blocks = -(-T // block_size)                                 # ceil(T / b)
    per_head = n_blocks * block_size * (block_size + 2 * window + G) + G * T
    return B * H * per_head
'''
    _hints = ("Count one head of one sequence, then multiply by B · H.",
              "Blocks: `ceil(T / b)` of them (`-(-T // b)` in integers), each `b × (b + 2w + G)`.",
              "Add the global rows: G × T. Compare with dense: T × T.")
    _congrats = "For T = 16384, b = w = 256, G = 4 that is about 21 times fewer entries than dense scores, and the gap grows with T."
    _reference = blocked_score_elements_reference
    _compare = compare_int
    _cases = (Case("one block fits exactly", {"B": 1, "H": 1, "T": 8, "window": 2, "block_size": 4, "G": 0}),
              Case("a padded last block", {"B": 1, "H": 1, "T": 10, "window": 2, "block_size": 4, "G": 0}),
              Case("with global tokens", {"B": 1, "H": 2, "T": 12, "window": 1, "block_size": 4, "G": 2}),
              Case("window 0", {"B": 2, "H": 3, "T": 9, "window": 0, "block_size": 3, "G": 1}),
              Case("a realistic size", {"B": 2, "H": 12, "T": 16384, "window": 256, "block_size": 256,
                                        "G": 4}))


QUESTIONS = (KeySpan(), BlockBandMask(), BlockedHybridAttention(), BlockedScoreElements())
