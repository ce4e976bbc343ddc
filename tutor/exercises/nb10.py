"""Exercises for notebook 10, sliding windows in decoders: the slot of a position in a ring cache,
one decode step over a cache held in slot order, the mask of a sink + window decoder, and
gpt-oss's learned sink logit."""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from ..decode import CacheView, decode_attention, ring_slot, sink_window_mask
from .cases import Case
from .compare import as_int, compare_pairs, compare_tensor, type_name
from .problem import FunctionProblem

NUMBER = "10"
NOTEBOOK = "10_sliding_windows_in_decoders"
TITLE = "Exercises 10 · Sliding windows in decoders"
INTRO = """A decoder that generates keeps a KV cache. With a causal window `w` the newest query `i` reads
only the keys `0 <= i - j <= w`, plus the `sinks` first positions kept forever (StreamingLLM's sink
*tokens*): a ring of `sinks + w + 1` slots is all it needs. These exercises place a position in the
ring, run one decode step over a cache whose slots are not in position order, write the mask such a
decoder uses, and add gpt-oss's learned sink *logit* to a softmax."""


# --------------------------------------------------------------------------- q1: the slot of a position
def compare_slot(got, expected: int, case) -> Optional[str]:
    """A slot number: a plain int."""
    if isinstance(got, Tensor) or as_int(got) is None:
        return f"you returned {got!r} ({type_name(got)}); a slot is a plain int."
    if as_int(got) != expected:
        return f"slot {as_int(got)} is not where this position lives."
    return None


class RingSlot(FunctionProblem):
    id, title, _name = "10.q1", "The slot of a position", "slot_of"
    _prompt = """A ring cache for a layer with causal window `w` and `sinks` sink tokens has `sinks + w + 1`
slots. The sink tokens (positions `0 .. sinks - 1`) sit in the first `sinks` slots, forever; every
later position `p` goes into the ring of the last `w + 1` slots, at `p mod (w + 1)` inside the ring,
overwriting the key `w + 1` positions older (the one key the next query may no longer read). Write
`slot_of(position, window, sinks)` returning the slot (an int) where `position` is stored."""
    _stub = '''def slot_of(position, window, sinks):
    """The slot (0 .. sinks + window) of `position` in a ring cache."""
    raise NotImplementedError  # replace with your code
'''
    _solution = '''def slot_of(position, window, sinks):
    """The slot (0 .. sinks + window) of `position` in a ring cache."""
    if position < sinks:
        return position                         # a sink token keeps its own slot
    return sinks + position % (window + 1)      # the ring: w + 1 slots after the sinks
'''
    _hints = ("Two cases: a sink token (position < sinks) and everything else.",
              "The ring holds w + 1 keys (the query itself counts: 0 <= i - j <= w), not w.",
              "The ring starts after the sink slots: add `sinks` to `position % (window + 1)`.")
    _congrats = ("The slots after a wrap are not in position order; the cache stores each key's absolute "
                 "position beside it, so the order never matters (question 2).")
    _reference = ring_slot
    _forbidden = ("tutor.decode.cache.ring_slot",)
    _args = ("position", "window", "sinks")
    _compare = compare_slot
    _cases = Case.table(("position", "window", "sinks"), (
        ("the first position", (0, 4, 0)),
        ("the last slot before the wrap", (4, 4, 0)),
        ("the first wrap", (5, 4, 0)),
        ("a sink token", (2, 4, 3)),
        ("the first position after the sinks", (3, 4, 3)),
        ("after a wrap, with sinks", (9, 4, 3)),
        ("window 0: one slot", (10, 0, 0)),
        ("window 0 with sinks", (10, 0, 2)),
        ("far into the stream", (1000, 7, 4))))


# --------------------------------------------------------------------------- q2: one decode step
@functools.lru_cache(maxsize=None)
def _cache_state(kind: str, step: int, window: int, sinks: int, seed: int):
    """(q, keys, values, positions): what a cache holds after position ``step`` was stored.

    ``"ring"``: a ring of sinks + w + 1 slots; ``"scrambled"``: every position 0..step in a shuffled
    slot order plus two empty slots (a growing cache the rule must cut down).
    """
    g = torch.Generator().manual_seed(seed)
    B, H, Dh = 2, 2, 4
    if kind == "ring":
        size = sinks + window + 1
        positions = torch.full((size,), -1, dtype=torch.long)
        for p in range(step + 1):
            positions[ring_slot(p, window, sinks)] = p
    else:
        order = torch.randperm(step + 1, generator=g)
        positions = torch.cat([order, torch.tensor([-1, -1])])[torch.randperm(step + 3, generator=g)]
    N = positions.numel()
    keys = torch.randn(B, H, N, Dh, generator=g)
    values = torch.randn(B, H, N, Dh, generator=g)
    q = torch.randn(B, H, 1, Dh, generator=g)
    return q, keys, values, positions


def decode_step_reference(q: Tensor, keys: Tensor, values: Tensor, positions: Tensor, window: int,
                          sinks: int) -> Tensor:
    """One decode step of the newest query (at ``positions.max()``) over the cache's slots."""
    return decode_attention(q, CacheView(keys, values, positions, window, sinks))


def _state_case(name: str, kind: str, step: int, window: int, sinks: int, seed: int) -> Case:
    state = functools.partial(_cache_state, kind, step, window, sinks, seed)
    return Case(name, {"q": lambda: state()[0], "keys": lambda: state()[1], "values": lambda: state()[2],
                       "positions": lambda: state()[3], "window": window, "sinks": sinks, "step": step})


class DecodeStep(FunctionProblem):
    id, title, _name = "10.q2", "One decode step over a cache", "decode_step"
    _prompt = """A cache holds `keys` and `values` (B, H, N, Dh) in **slot order**, not position order, and
`positions` (N,): the absolute position of each slot's key, `-1` for an empty slot. The newest query
`q` (B, H, 1, Dh) sits at position `i = positions.max()` (its own key is already stored). Write
`decode_step(q, keys, values, positions, window, sinks)` returning its attention output (B, H, 1, Dh):
the softmax of the scaled scores `q . k_j / sqrt(Dh)` over the slots whose key `j` it may read,
`0 <= i - j <= window` or `0 <= j < sinks` (never an empty slot), times their values. Some caches
are rings (every key held is readable), some hold every position so far, shuffled."""
    _stub = '''def decode_step(q, keys, values, positions, window, sinks):
    """(B, H, 1, Dh): the newest query's attention over the slots it may read."""
    raise NotImplementedError  # replace with your code
'''
    _solution = '''def decode_step(q, keys, values, positions, window, sinks):
    """(B, H, 1, Dh): the newest query's attention over the slots it may read."""
    i = positions.max()
    j = positions                                                  # (N,) one position per slot
    ok = (j >= 0) & (j <= i) & ((i - j <= window) | (j < sinks))   # (N,) by position, not by slot
    scores = q @ keys.transpose(-1, -2) / q.shape[-1] ** 0.5       # (B, H, 1, N)
    scores = scores.masked_fill(~ok, float("-inf"))
    return scores.softmax(dim=-1) @ values                         # (B, H, 1, Dh)
'''
    _hints = ("Build the (N,) mask from `positions`, never from slot numbers: after a wrap the oldest key "
              "sits in the middle of the ring.",
              "Empty slots have position -1: they must be masked even though `i - (-1)` may be within the "
              "window.",
              "`scores.masked_fill(~ok, float('-inf')).softmax(-1) @ values`, with the scores scaled by "
              "`1 / sqrt(Dh)`; the newest key is always readable, so no row is empty.")
    _congrats = ("The softmax is a sum over keys, so the slot order never matters as long as every key "
                 "carries its position: this is `tutor.decode.decode_attention`.")
    _reference = decode_step_reference
    _forbidden = ("tutor.decode.attend.decode_attention", "tutor.decode.attend.masked_attention",
                  "tutor.decode.masked_attention")
    _args = ("q", "keys", "values", "positions", "window", "sinks")
    _compare = compare_tensor
    _cases = (_state_case("a ring not yet full (empty slots)", "ring", 2, 4, 0, 0),
              _state_case("a ring after a wrap", "ring", 11, 4, 0, 1),
              _state_case("a ring with sinks, after a wrap", "ring", 13, 3, 2, 2),
              _state_case("every position so far, shuffled", "scrambled", 9, 3, 0, 3),
              _state_case("every position so far, shuffled, with sinks", "scrambled", 12, 2, 3, 4),
              _state_case("window 0 with a sink", "scrambled", 7, 0, 1, 5),
              _state_case("a window longer than the stream", "scrambled", 4, 9, 0, 6))


# --------------------------------------------------------------------------- q3: the decoder's mask
def decoder_mask_reference(T: int, window: Optional[int], sinks: int) -> Tensor:
    """(T, T) bool: the sink + window causal mask (``window=None``: full causal)."""
    return sink_window_mask(T, window, sinks)[0]


class DecoderMask(FunctionProblem):
    id, title, _name = "10.q3", "The mask a sink + window decoder uses", "decoder_mask"
    _prompt = """Recomputing a whole prefix at once (the oracle of every cache), query `i` of a decoder layer
reads key `j` when `j <= i` and (`i - j <= window` or `j < sinks`). `window=None` is a full (causal)
layer, which has no sinks to keep. Write `decoder_mask(T, window, sinks)` returning the bool (T, T)
mask, True where query `i` may read key `j`."""
    _stub = '''def decoder_mask(T, window, sinks):
    """(T, T) bool: True where query i may read key j."""
    raise NotImplementedError  # replace with your code
'''
    _solution = '''def decoder_mask(T, window, sinks):
    """(T, T) bool: True where query i may read key j."""
    i = torch.arange(T)[:, None]                 # (T, 1) queries
    j = torch.arange(T)[None, :]                 # (1, T) keys
    causal = j <= i
    if window is None:
        return causal
    return causal & ((i - j <= window) | (j < sinks))
'''
    _hints = ("Start from the causal mask `j <= i` on a (T, 1) against (1, T) grid.",
              "The window and the sinks are an OR inside the causal AND: a sink is never read before it "
              "exists.",
              "The window counts the query itself: `i - j <= window` gives window + 1 keys, not `<`.")
    _congrats = ("This is also the course's causal hybrid mask with the first `sinks` positions as global "
                 "tokens: `hybrid_mask(T, w, sinks_as_global_mask(T, sinks), causal=True)`.")
    _reference = decoder_mask_reference
    _forbidden = ("tutor.decode.rule.sink_window_mask", "tutor.decode.rule.sink_window_mask_mod",
                  "tutor.masks.hybrid_mask", "tutor.decode.rule.allowed_by_position")
    _args = ("T", "window", "sinks")
    _compare = compare_pairs
    _cases = Case.table(("T", "window", "sinks"), (
        ("a window, no sinks", (9, 2, 0)),
        ("a window and two sinks", (10, 2, 2)),
        ("window 0 and one sink", (6, 0, 1)),
        ("more sinks than the window", (12, 1, 4)),
        ("a full layer", (7, None, 0)),
        ("a window longer than T", (5, 8, 1))))


# --------------------------------------------------------------------------- q4: the learned sink logit
def attend_with_sink_reference(scores: Tensor, values: Tensor, sink: Tensor) -> Tensor:
    """(H, Dh): softmax over the N scores and one sink logit per head (no value), times the values."""
    logits = torch.cat([scores, sink[:, None]], dim=-1)                  # (H, N + 1)
    p = logits.softmax(dim=-1)[:, :-1]                                   # (H, N): the sink's share dropped
    return (p[:, :, None] * values).sum(dim=1)                           # (H, Dh)


def _sink_inputs(H: int, N: int, Dh: int, seed: int, score_scale: float = 1.0, sink_shift: float = 0.0):
    def build():
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(H, N, generator=g) * score_scale, torch.randn(H, N, Dh, generator=g),
                torch.randn(H, generator=g) * 2 + sink_shift)
    return build


def _sink_case(name: str, *spec, **kw) -> Case:
    build = _sink_inputs(*spec, **kw)
    return Case(name, {"scores": lambda: build()[0], "values": lambda: build()[1], "sink": lambda: build()[2]})


class SinkLogit(FunctionProblem):
    id, title, _name = "10.q4", "gpt-oss's learned sink logit", "attend_with_sink"
    _prompt = """gpt-oss gives every head a learned number `s_h`, a *sink logit*: one more logit in the softmax
with no value behind it. For one query, `scores` (H, N) are its scaled scores over N readable keys,
`values` (H, N, Dh) their values and `sink` (H,) the heads' sink logits. The weight of key `j` is
`exp(scores_j) / (exp(sink) + sum_k exp(scores_k))`, so a head's weights sum to less than 1. Write
`attend_with_sink(scores, values, sink)` returning the output (H, Dh): the weighted sum of the values.
Some scores are large: keep the softmax stable."""
    _stub = '''def attend_with_sink(scores, values, sink):
    """(H, Dh): the values weighted by a softmax over the scores and one sink logit per head."""
    raise NotImplementedError  # replace with your code
'''
    _solution = '''def attend_with_sink(scores, values, sink):
    """(H, Dh): the values weighted by a softmax over the scores and one sink logit per head."""
    logits = torch.cat([scores, sink[:, None]], dim=-1)     # (H, N + 1): the sink is one more column
    p = torch.softmax(logits, dim=-1)[:, :-1]                # (H, N): drop the sink's own weight
    return torch.einsum("hn,hnd->hd", p, values)            # (H, Dh)
'''
    _hints = ("The sink is one more column of the softmax; it has no value, so its weight is dropped after "
              "the softmax.",
              "`torch.cat([scores, sink[:, None]], dim=-1)` is (H, N + 1); `torch.softmax` subtracts the "
              "row maximum for you, so large scores stay finite.",
              "Drop the last column of the weights (`[:, :-1]`) and sum `p[:, :, None] * values` over N.")
    _congrats = ("A sink *logit* takes weight away from every key without a slot in the cache; a sink "
                 "*token* (question 2's `sinks`) is a real key with a real value. Two things, one word.")
    _reference = attend_with_sink_reference
    _forbidden = ("tutor.decode.attend.masked_attention", "tutor.decode.masked_attention",
                  "tutor.decode.attend.decode_attention")
    _args = ("scores", "values", "sink")
    _compare = compare_tensor
    _cases = (_sink_case("one head, four keys", 1, 4, 3, 0),
              _sink_case("four heads, eight keys", 4, 8, 5, 1),
              _sink_case("a sink far above the scores", 2, 6, 4, 2, sink_shift=8.0),
              _sink_case("a sink far below the scores", 2, 6, 4, 3, sink_shift=-8.0),
              _sink_case("large scores", 3, 5, 4, 4, score_scale=100.0),
              _sink_case("one key", 2, 1, 3, 5))


QUESTIONS = (RingSlot(), DecodeStep(), DecoderMask(), SinkLogit())
