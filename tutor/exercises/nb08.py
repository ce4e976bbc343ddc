"""Exercises for notebook 08, beyond one device: which slices of which ranks a shard's halo needs,
merging two partial softmax states, and the bytes one layer sends (against all-gather)."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..distributed.halo import halo_pieces
from ..distributed.merge import SoftmaxState, finish, merge_states, partial_state
from ..distributed.sharding import bounds_from_lengths, shard_bounds
from .cases import Case
from .compare import as_int, compare_int, compare_tensor, type_name
from .problem import FunctionProblem

NUMBER = "08"
NOTEBOOK = "08_beyond_one_device"
TITLE = "Exercises 08 · Beyond one device"
INTRO = """A sequence too long for one device is cut into contiguous shards, one per rank. Each rank then
needs the keys within `w` of its shard (its *halo*) from its neighbours, and the global rows need
every rank's keys, combined by merging partial softmax states. These exercises build those three
pieces: the halo's slices, the merge, and the bytes a layer sends."""


# --------------------------------------------------------------------------- q1: halo slices
def halo_slices_reference(lengths: List[int], rank: int, window: int, causal: bool) -> List[tuple]:
    """[(src, lo, hi)]: rows lo:hi of rank src's shard that ``rank`` needs, in position order."""
    return [(p.src, p.lo, p.hi) for p in halo_pieces(bounds_from_lengths(lengths), rank, window, causal)]


def compare_slices(got, expected: List[tuple], case) -> Optional[str]:
    """A list of (src, lo, hi) int triples, exactly the reference's, in position order."""
    if not isinstance(got, (list, tuple)):
        return f"you returned a {type_name(got)}; it should be a list of (src, lo, hi) tuples."
    triples = []
    for item in got:
        if not isinstance(item, (list, tuple)) or len(item) != 3 or any(as_int(x) is None for x in item):
            return f"your list holds {item!r}; every entry should be a tuple of three ints (src, lo, hi)."
        triples.append(tuple(as_int(x) for x in item))
    values = case.tensors()
    rank = values["rank"]
    for src, lo, hi in triples:
        if src == rank:
            return f"your list has a slice of rank {rank} itself; its own keys need no exchange."
        if lo >= hi:
            return f"your list has the empty slice ({src}, {lo}, {hi}); leave out ranks that send nothing."
    extra = [t for t in triples if t not in expected]
    if extra:
        src, lo, hi = extra[0]
        return f"rank {rank} does not need rows {lo}:{hi} of rank {src} (as one slice)."
    missing = [t for t in expected if t not in triples]
    if missing:
        return f"your list leaves out {len(missing)} slice(s) that rank {rank} needs."
    if triples != expected:
        return "the slices are right but not in position order (left halo first, then right, by rank)."
    return None


class HaloSlices(FunctionProblem):
    id, title, _name = "08.q1", "Which ranks and slices does a halo need?", "halo_slices"
    _prompt = """Rank `r` holds positions `[start_r, end_r)` of the sequence; `lengths[r]` is its shard length
(shards are contiguous and in rank order, so `start_r = lengths[0] + ... + lengths[r-1]`). Its queries
read keys in `[start - w, end + w)` (only `[start - w, end)` when `causal`), clipped to `[0, T)`.
Write `halo_slices(lengths, rank, window, causal)` returning the list of `(src, lo, hi)` such that
rank `rank` needs rows `lo:hi` of rank `src`'s shard (indices *local* to `src`'s shard), in position
order. Leave out `rank` itself and ranks that send nothing; when `window` is longer than a shard the
halo reaches several ranks."""
    _solution = '''def halo_slices(lengths, rank, window, causal):
    """[(src, lo, hi)]: rows lo:hi of rank src's shard that this rank needs, in position order."""
    starts = [sum(lengths[:r]) for r in range(len(lengths))]
    T = sum(lengths)
    start, end = starts[rank], starts[rank] + lengths[rank]
    need = [(max(0, start - window), start)]                   # left halo
    if not causal:
        need.append((end, min(T, end + window)))               # right halo
    slices = []
    for a, b in need:
        for src, s in enumerate(starts):
            lo, hi = max(a, s), min(b, s + lengths[src])       # overlap with src's shard
            if src != rank and lo < hi:
                slices.append((src, lo - s, hi - s))           # local to src
    return slices
'''
    _hints = ("First turn the lengths into global bounds `[start_r, end_r)` with running sums.",
              "The halo is one or two global ranges. Intersect each with every other rank's `[start_r, end_r)`: "
              "`lo, hi = max(a, s), min(b, e)`; keep it when `lo < hi`.",
              "Subtract `start_src` to make the slice local to the sender. Causal queries never read later "
              "keys, so there is no right halo.")
    _congrats = ("With w = 64 and shards of 16384 positions a middle rank needs 64 rows from each of its two "
                 "neighbours, however long the sequence.")
    _reference = halo_slices_reference
    _forbidden = ("tutor.distributed.halo.halo_pieces", "tutor.distributed.halo.halo_plan")
    _compare = compare_slices
    _cases = (Case("a middle rank, small window", {"lengths": [4, 4, 4, 4], "rank": 1, "window": 2, "causal": False}),
              Case("the first rank", {"lengths": [5, 5, 5], "rank": 0, "window": 3, "causal": False}),
              Case("the last rank", {"lengths": [5, 5, 5], "rank": 2, "window": 3, "causal": False}),
              Case("uneven shards", {"lengths": [3, 3, 2, 2], "rank": 2, "window": 1, "causal": False}),
              Case("w longer than a shard", {"lengths": [3, 3, 2, 2], "rank": 2, "window": 4, "causal": False}),
              Case("w >= T", {"lengths": [2, 3, 4], "rank": 1, "window": 50, "causal": False}),
              Case("causal", {"lengths": [4, 4, 4, 4], "rank": 2, "window": 5, "causal": True}),
              Case("window 0", {"lengths": [4, 4], "rank": 1, "window": 0, "causal": False}),
              Case("one rank", {"lengths": [7], "rank": 0, "window": 3, "causal": False}),
              Case("the demo's shards", {"lengths": [16384] * 4, "rank": 1, "window": 64, "causal": False}),
              Case("ten ranks, reaching two on each side", {"lengths": [10] * 10, "rank": 5, "window": 12,
                                                            "causal": False}))


# --------------------------------------------------------------------------- q2: merge two states
def merge_partial_reference(m1: Tensor, l1: Tensor, o1: Tensor, m2: Tensor, l2: Tensor, o2: Tensor) -> Tensor:
    """Output rows (G, Dh) of the softmax over both key sets, from the two partial states."""
    return finish(merge_states(SoftmaxState(m1, l1, o1), SoftmaxState(m2, l2, o2)))


def _states(G: int, n1: int, n2: int, Dh: int, seed: int, std: float = 1.0, empty=(), empty_rows=()):
    """Two partial states of the same G rows over n1 and n2 keys; ``empty`` lists sides with no key."""
    def build():
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(G, n1 + n2, generator=g) * std                        # (G, n1 + n2)
        s[: G // 2, :n1] += 3 * std                                           # different maxima per side
        v = torch.randn(n1 + n2, Dh, generator=g)                             # (n1 + n2, Dh)
        ok = torch.ones(G, n1 + n2, dtype=torch.bool)                        # (G, n1 + n2)
        if 1 in empty:
            ok[:, :n1] = False
        if 2 in empty:
            ok[:, n1:] = False
        for row in empty_rows:
            ok[row] = False
        a = partial_state(s[:, :n1], ok[:, :n1], v[:n1])
        b = partial_state(s[:, n1:], ok[:, n1:], v[n1:])
        return {"m1": a.m, "l1": a.l, "o1": a.o, "m2": b.m, "l2": b.l, "o2": b.o}
    return build


class _StateCase(Case):
    def tensors(self):
        return self.values["build"]()


class MergePartial(FunctionProblem):
    id, title, _name = "08.q2", "Merge two partial softmax states", "merge_partial"
    _prompt = """Two ranks each scored the same `G` global queries against their own keys and kept, per row,
a *partial state*: `m` (G, 1) the largest allowed score (`-inf` if the rank had no allowed key),
`l` (G, 1) the sum of `exp(s - m)` over its allowed keys and `o` (G, Dh) the sum of `exp(s - m) · v`.
Write `merge_partial(m1, l1, o1, m2, l2, o2)` returning the (G, Dh) output rows of the softmax over
*both* key sets, exactly as if one process had seen all keys. A row with no allowed key anywhere
gives zeros (never NaN). Scores can be large: `exp(m)` alone may overflow float32."""
    _solution = '''def merge_partial(m1, l1, o1, m2, l2, o2):
    """(G, Dh) softmax output over both key sets, from two partial states."""
    m = torch.maximum(m1, m2)                                    # (G, 1) the common max
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # rows with no key at all
    a = torch.where(torch.isfinite(m1), torch.exp(m1 - m), torch.zeros_like(m1))  # rescale side 1
    b = torch.where(torch.isfinite(m2), torch.exp(m2 - m), torch.zeros_like(m2))  # rescale side 2
    l = l1 * a + l2 * b                                          # (G, 1)
    o = o1 * a + o2 * b                                          # (G, Dh)
    return o / torch.where(l > 0, l, torch.ones_like(l))         # zeros where l == 0
'''
    _hints = ("Both states must be expressed relative to the same max: take `M = max(m1, m2)`.",
              "`l1` was computed with `exp(s - m1)`; relative to `M` it becomes `l1 * exp(m1 - M)`, and the "
              "same factor rescales `o1`. Then add the two sides and divide `o` by `l`.",
              "A side with no key has `m = -inf` and `l = 0`: its factor must be 0, not `exp(-inf - -inf)` = "
              "NaN. Use `torch.where(torch.isfinite(m1), ..., 0)` and divide by `l` only where `l > 0`.")
    _congrats = ("Across P ranks the same merge is one all-reduce MAX of m, then one all-reduce SUM of the "
                 "rescaled l and o.")
    _reference = merge_partial_reference
    _forbidden = ("tutor.distributed.merge.merge_states", "tutor.distributed.merge.all_reduce_states")
    _compare = compare_tensor
    _cases = (_StateCase("ordinary scores", {"build": _states(4, 5, 7, 3, seed=0)}),
              _StateCase("one key on each side", {"build": _states(3, 1, 1, 2, seed=1)}),
              _StateCase("large scores (exp overflows)", {"build": _states(4, 6, 6, 3, seed=2, std=60.0)}),
              _StateCase("side 1 has no allowed key", {"build": _states(3, 4, 5, 2, seed=3, empty=(1,))}),
              _StateCase("side 2 has no allowed key", {"build": _states(3, 4, 5, 2, seed=4, empty=(2,))}),
              _StateCase("a row with no key anywhere", {"build": _states(4, 3, 3, 2, seed=5, empty_rows=(1,))}))


# --------------------------------------------------------------------------- q3: bytes per layer
def halo_bytes_reference(T: int, world_size: int, rank: int, window: int, B: int, H: int, Dh: int,
                         bytes_per_value: int, causal: bool) -> int:
    """Bytes of K and V that ``rank`` sends in one halo exchange (shards of ``shard_bounds(T, P)``)."""
    bounds = shard_bounds(T, world_size)
    rows = sum(p.hi - p.lo for dst in range(world_size) for p in halo_pieces(bounds, dst, window, causal)
               if p.src == rank)
    return 2 * rows * B * H * Dh * bytes_per_value


_BYTES_ARGS = ("T", "world_size", "rank", "window", "B", "H", "Dh", "bytes_per_value", "causal")


class HaloBytes(FunctionProblem):
    id, title, _name = "08.q3", "The bytes one layer sends", "halo_bytes"
    _prompt = """The sequence of `T` positions is cut with `tutor.distributed.shard_bounds(T, world_size)`
(a list of `(start, end)`, one per rank). In one attention layer each rank sends the other ranks
the rows of **K and V** they need for their halos (question 1). Write `halo_bytes(T, world_size, rank,
window, B, H, Dh, bytes_per_value, causal)` returning, as an `int`, the bytes rank `rank` sends: one
row of K is `B · H · Dh` values of `bytes_per_value` bytes, and so is one row of V. (Compare with an
all-gather of K and V, where every rank sends its whole shard to each of the `P - 1` others.)"""
    _solution = '''from tutor.distributed import shard_bounds

def halo_bytes(T, world_size, rank, window, B, H, Dh, bytes_per_value, causal):
    """Bytes of K and V that `rank` sends in one halo exchange."""
    bounds = shard_bounds(T, world_size)
    s, e = bounds[rank]
    rows = 0
    for dst, (ds, de) in enumerate(bounds):
        if dst == rank:
            continue
        need = [(max(0, ds - window), ds)]                   # dst's left halo
        if not causal:
            need.append((de, min(T, de + window)))           # dst's right halo
        for a, b in need:
            rows += max(0, min(b, e) - max(a, s))            # the part of it this rank holds
    return 2 * rows * B * H * Dh * bytes_per_value            # K and V
'''
    _hints = ("Turn it around: for every *other* rank `dst`, which of the rows it needs does `rank` hold?",
              "`dst` needs `[start_dst - w, start_dst)` and (not causal) `[end_dst, end_dst + w)`, clipped to "
              "`[0, T)`; the overlap with `[start, end)` has `max(0, min(b, e) - max(a, s))` rows.",
              "Count K and V: `2 * rows * B * H * Dh * bytes_per_value`.")
    _congrats = ("At T = 65536, P = 4, w = 64 a middle rank sends 2·64 rows each of K and V; an all-gather "
                 "sends 3 · 16384: hundreds of times more, and it grows with T while the halo does not.")
    _reference = halo_bytes_reference
    _forbidden = ("tutor.distributed.halo.halo_rows", "tutor.distributed.halo.halo_plan",
                  "tutor.distributed.halo.halo_pieces")
    _compare = compare_int
    _cases = Case.table(_BYTES_ARGS, (
            ("a middle rank", (64, 4, 1, 4, 1, 2, 8, 4, False)),
            ("the first rank", (64, 4, 0, 4, 1, 2, 8, 4, False)),
            ("the last rank, causal (it sends nothing)", (64, 4, 3, 4, 1, 2, 8, 4, True)),
            ("a middle rank, causal", (64, 4, 1, 4, 2, 2, 8, 2, True)),
            ("T not divisible by P", (10, 4, 2, 1, 1, 1, 4, 4, False)),
            ("w longer than a shard", (10, 4, 1, 4, 1, 1, 4, 4, False)),
            ("w >= T", (12, 3, 1, 40, 1, 2, 2, 2, False)),
            ("bfloat16, the demo's sizes", (65536, 4, 2, 64, 1, 2, 32, 2, False))))


QUESTIONS = (HaloSlices(), MergePartial(), HaloBytes())
