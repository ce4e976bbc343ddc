"""Exercises for notebook 03, unfold vectorization: edge masks, local windows, gathered globals,
the full hybrid, and the attention map rebuilt by scatter."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..attention import unfold_attention
from ..attention.global_tokens import gather_tokens, global_index
from ..attention.unfold import local_allowed, unfold_windows
from .cases import HYBRID_CASES, LOCAL_CASES, AttnCase
from .compare import compare_pairs, compare_tensor, compare_windows
from .loops import loop_over_T
from .problem import AttentionProblem, FunctionProblem

NUMBER = "03"
NOTEBOOK = "03_unfold_vectorization"
TITLE = "Exercises 03 · Unfold vectorization"
INTRO = """`unfold` turns K into a tensor of windows, `(B, H, T, 2w+1, Dh)`: slot `r` of row `i` holds
key `i - w + r`. Near the edges some slots fall outside the sequence and hold padding zeros that
must be *masked*, not scored. Global keys join as extra columns, gathered per sequence."""

_GLOBAL_CASES = HYBRID_CASES[1:] + (
    AttnCase("no global token in any sequence", T=6, window=1, globals_=((), ()), seed=31),
    # long enough that an unstable sort (argsort, topk, sort without stable=True) shows its order
    AttnCase("four global tokens in a long sequence", T=40, window=2,
             globals_=((3, 17, 30, 39), (0, 1, 38, 39)), seed=32),
    AttnCase("many ties: every other token global", T=48, window=1,
             globals_=(tuple(range(0, 48, 2)), tuple(range(1, 48, 3)), (5,)), seed=33),
    AttnCase("global tokens spread over T = 64", T=64, window=3,
             globals_=((1, 2, 3, 5, 8, 13, 21, 34, 55),), seed=34))


def window_edge_mask_reference(T: int, window: int) -> Tensor:
    """(T, 2w+1) bool: slot r of row i is a real position, 0 <= i - w + r < T."""
    return unfold_windows(torch.ones(1, T, dtype=torch.bool), window, False)[0]


def unfold_local_attention_reference(q, k, v, window):
    """Local-only attention (no global token): (B, H, T, Dh)."""
    return unfold_attention(q, k, v, window)


def gather_globals_reference(x: Tensor, global_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """x (B, H, T, D) -> (x_g (B, H, G, D), valid (B, G)): globals of each sequence, in order."""
    idx, valid = global_index(global_mask)                                   # (B, G), (B, G)
    return gather_tokens(x, idx), valid


def unfold_hybrid_attention_reference(q, k, v, window, global_mask):
    """The attention of docs/spec.md, non-causal, no padding: (B, H, T, Dh)."""
    return unfold_attention(q, k, v, window, global_mask)


def scatter_map_reference(p_loc: Tensor, p_glob: Tensor, global_idx: Tensor, window: int) -> Tensor:
    """(B, H, T, T) map from window slots (B, H, T, 2w+1) and global columns (B, H, T, G).

    Built densely with one-hot column tables, a different road from the scatter it checks.
    """
    T, R = p_loc.shape[2], p_loc.shape[3]
    cols = torch.arange(T)[:, None] - window + torch.arange(R)[None, :]      # (T, 2w+1)
    onehot = (cols[..., None] == torch.arange(T)).to(p_loc.dtype)            # (T, 2w+1, T)
    glob = (global_idx[..., None] == torch.arange(T)).to(p_glob.dtype)       # (B, G, T)
    return (torch.einsum("bhtr,trj->bhtj", p_loc, onehot)
            + torch.einsum("bhtg,bgj->bhtj", p_glob, glob))                  # (B, H, T, T)


def compare_gathered(got, expected: Tuple[Tensor, Tensor], case) -> Optional[str]:
    """(x_g, valid): valid exactly; x_g equal on valid slots (padded slots may hold anything)."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"your function should return a pair (x_g, valid), not a {type(got).__name__}."
    x_g, valid = got
    problem = compare_tensor(valid, expected[1], case)
    if problem:
        return "in `valid`, " + problem
    if isinstance(x_g, Tensor) and x_g.shape == expected[0].shape:
        x_g = torch.where(valid[:, None, :, None], x_g, expected[0])         # ignore padded slots
    problem = compare_tensor(x_g, expected[0], case)
    if problem and _same_tokens_other_order(x_g, expected[0]):
        return ("in `x_g`, every sequence holds the right global tokens, but not in position order "
                "(slot g should hold the g-th global position). A sort that is not stable, such as "
                "`argsort` or `topk` without `stable=True`, may reorder tied entries.")
    return "in `x_g`, " + problem if problem else None


def _same_tokens_other_order(got: Tensor, expected: Tensor) -> bool:
    """True when each (b, h) holds the rows of ``expected`` in another order: (B, H, G, D) each."""
    if got.shape != expected.shape or got.dtype != expected.dtype or got.numel() == 0:
        return False
    close = torch.isclose(got.detach()[:, :, :, None, :], expected[:, :, None, :, :],
                          rtol=1e-4, atol=1e-5).all(-1)                      # (B, H, G, G): row g ~ row g'
    return bool(close.any(-1).all() and close.any(-2).all())


def _map_inputs(case: AttnCase):
    """Window and global probabilities shaped like unfold's, zero where unfold masks them."""
    g = torch.Generator().manual_seed(300 + case.seed)
    is_global = case.global_mask()                                           # (B, T)
    idx, valid = global_index(is_global)                                     # (B, G)
    no_pad = torch.zeros_like(is_global)
    ok = local_allowed(case.T, case.window, is_global, no_pad, False)       # (B, T, 2w+1)
    p_loc = torch.rand(case.B, case.H, case.T, 2 * case.window + 1, generator=g) * ok[:, None]
    p_glob = torch.rand(case.B, case.H, case.T, idx.shape[1], generator=g) * valid[:, None, None, :]
    return {"p_loc": p_loc, "p_glob": p_glob, "global_idx": idx, "window": case.window}


class NoLoopOverT(FunctionProblem):
    """A question whose prompt forbids a Python loop over T: a right answer must also run as many
    of its own lines at T = 16 as at T = 32 (see :mod:`.loops`)."""
    _probe = dict(window=2, globals_=((1,),), seed=40)

    def _check(self, fn):
        result = super()._check(fn)
        if result.status != "correct":
            return result
        problem, counts = loop_over_T(
            fn, lambda T: tuple(self._arguments(AttnCase("loop probe", T=T, **self._probe)).values()))
        if problem:
            return self._result("incorrect", problem)
        if any(counts):                    # say it only when the answer's own lines were counted
            return self._result("correct", f"{result.message} No Python loop over T: your code ran "
                                           f"{counts[0]} of its own lines at T = 16 and at T = 32.")
        return result


class WindowEdgeMask(FunctionProblem):
    id, title, _name = "03.q1", "Which window slots are real", "window_edge_mask"
    _prompt = """After padding K with `w` zeros on each side and unfolding, slot `r` of query `i`
holds key `i - w + r`. Write `window_edge_mask(T, window)` returning a `(T, 2*window + 1)` bool
tensor, True where that key is a real position (`0 <= i - w + r < T`) and False where it is padding."""
    _solution = '''def window_edge_mask(T, window):
    """(T, 2w+1) bool: True where slot r of query i is a real key."""
    i = torch.arange(T)[:, None]                   # (T, 1) query positions
    r = torch.arange(2 * window + 1)[None, :]      # (1, 2w+1) slots
    j = i - window + r                             # (T, 2w+1) key held by each slot
    return (j >= 0) & (j < T)
'''
    _hints = ("Write down the key position held by each slot: j = i - w + r.",
              "Broadcast a (T, 1) column of i against a (1, 2w+1) row of r; keep 0 <= j < T.")
    _congrats = "Those False slots hold zeros after padding; scored as keys they would steal probability."
    _reference = window_edge_mask_reference
    _compare = compare_windows
    _forbidden = ("tutor.attention.unfold.unfold_windows", "tutor.attention.unfold.local_allowed")
    _cases = tuple(AttnCase(n, T=T, window=w) for n, T, w in (
        ("a small window", 6, 1), ("window 0", 5, 0), ("window >= T", 4, 5), ("a wider window", 9, 3)))


class UnfoldLocalAttention(NoLoopOverT, AttentionProblem):
    id, title, _name = "03.q2", "Local attention with unfold", "unfold_local_attention"
    _prompt = """Write `unfold_local_attention(q, k, v, window)`: sliding-window attention only (no
global token), vectorized with windows. `q, k, v` are `(B, H, T, Dh)`; return `(B, H, T, Dh)`.
Use `tutor.attention.unfold.unfold_windows(x, window)` (`(B, H, T, Dh)` → `(B, H, T, 2w+1, Dh)`,
zero-padded) and `tutor.attention.softmax.masked_softmax(scores, allowed)`; mask the edge slots.
No Python loop over T (the check runs your function at two lengths and counts its lines)."""
    _solution = '''from tutor.attention.unfold import unfold_windows
from tutor.attention.softmax import masked_softmax

def unfold_local_attention(q, k, v, window):
    """(B, H, T, Dh): local attention over unfolded windows."""
    T, Dh = q.shape[-2], q.shape[-1]
    k_win = unfold_windows(k, window)                                  # (B, H, T, 2w+1, Dh)
    v_win = unfold_windows(v, window)                                  # (B, H, T, 2w+1, Dh)
    scores = torch.einsum("bhtd,bhtrd->bhtr", q, k_win) / Dh ** 0.5    # (B, H, T, 2w+1)
    p = masked_softmax(scores, window_edge_mask(T, window))            # edge slots masked
    return torch.einsum("bhtr,bhtrd->bhtd", p, v_win)                  # (B, H, T, Dh)
'''
    _hints = ("Scores of query i against its own window: `torch.einsum('bhtd,bhtrd->bhtr', q, k_win)`.",
              "The padded slots hold zero keys whose score is 0, not -inf: without a mask they take "
              "part in the softmax. Your `window_edge_mask` from question 1 is the mask.",
              "Weighted sum of the window values: `torch.einsum('bhtr,bhtrd->bhtd', p, v_win)`. "
              "And remember the 1 / sqrt(Dh).")
    _congrats = "Same numbers as the loop, at the price of a (2w+1)-times larger K."
    _reference = unfold_local_attention_reference
    _cases = LOCAL_CASES
    _probe = dict(window=2, seed=40)


class GatherGlobals(FunctionProblem):
    id, title, _name = "03.q3", "Gathering global tokens per sequence", "gather_globals"
    _prompt = """Sequences may hold different numbers of global tokens. Write
`gather_globals(x, global_mask)` with `x` `(B, H, T, D)` and `global_mask` `(B, T)` bool. Let `G` be
the largest count over the batch. Return a pair `(x_g, valid)`: `x_g` `(B, H, G, D)` holds the
global tokens of each sequence in position order, and `valid` `(B, G)` bool says which slots are
real (a sequence with fewer globals has padded slots; what they hold does not matter)."""
    _solution = '''def gather_globals(x, global_mask):
    """x (B, H, T, D) -> (x_g (B, H, G, D), valid (B, G))."""
    B, H, T, D = x.shape
    counts = global_mask.sum(dim=1)                                        # (B,) globals per sequence
    G = int(counts.max()) if B > 0 else 0
    order = torch.argsort((~global_mask).int(), dim=1, stable=True)        # globals first, in order
    idx = order[:, :G]                                                     # (B, G)
    valid = torch.arange(G)[None, :] < counts[:, None]                     # (B, G)
    x_g = x.gather(2, idx[:, None, :, None].expand(B, H, G, D))            # (B, H, G, D)
    return x_g, valid
'''
    _hints = ("G is `global_mask.sum(1).max()`; slot g of sequence b is valid when g < that sequence's count.",
              "A *stable* sort of `~global_mask` (as ints) puts the global positions first, in their "
              "original order: `torch.argsort(..., dim=1, stable=True)[:, :G]` are the indices.",
              "`x.gather(2, idx[:, None, :, None].expand(B, H, G, D))` picks those tokens per sequence.")
    _congrats = "The invalid slots must be masked wherever they are used: they are not real keys."
    _reference = gather_globals_reference
    _compare = compare_gathered
    _forbidden = ("tutor.attention.global_tokens.global_index", "tutor.attention.global_tokens.gather_tokens")
    _cases = _GLOBAL_CASES

    def _arguments(self, case):
        values = case.tensors()
        return {"x": values["k"], "global_mask": values["global_mask"]}


class UnfoldHybridAttention(AttentionProblem):
    id, title, _name = "03.q4", "Hybrid attention with unfold", "unfold_hybrid_attention"
    _prompt = """Now the whole thing: `unfold_hybrid_attention(q, k, v, window, global_mask)` →
`(B, H, T, Dh)`, equal to dense hybrid attention. One softmax per query over `[window slots |
global columns]`: mask edge slots, mask padded global slots, and score a global key that also sits in
the window **only once** (mask its window slot). Global rows read every key: recompute them densely
(only G of them). Reuse your `window_edge_mask` and `gather_globals`."""
    _solution = '''def unfold_hybrid_attention(q, k, v, window, global_mask):
    """(B, H, T, Dh): local windows + global columns in one softmax, global rows dense."""
    B, H, T, Dh = q.shape
    scale = Dh ** -0.5
    k_win, v_win = unfold_windows(k, window), unfold_windows(v, window)     # (B, H, T, 2w+1, Dh)
    s_loc = torch.einsum("bhtd,bhtrd->bhtr", q, k_win) * scale              # (B, H, T, 2w+1)
    global_slot = unfold_windows(global_mask, window, False)                # (B, T, 2w+1)
    ok_loc = window_edge_mask(T, window) & ~global_slot                     # globals: only as columns
    k_g, valid = gather_globals(k, global_mask)                             # (B, H, G, Dh), (B, G)
    v_g, _ = gather_globals(v, global_mask)                                 # (B, H, G, Dh)
    s_glob = q @ k_g.transpose(-1, -2) * scale                              # (B, H, T, G)
    ok_glob = valid[:, None, :].expand(B, T, -1)                            # (B, T, G)
    p = masked_softmax(torch.cat([s_loc, s_glob], -1),
                       torch.cat([ok_loc, ok_glob], -1)[:, None])           # (B, H, T, 2w+1+G)
    p_loc, p_glob = p.split([2 * window + 1, k_g.shape[2]], dim=-1)
    out = torch.einsum("bhtr,bhtrd->bhtd", p_loc, v_win) + p_glob @ v_g    # (B, H, T, Dh)
    for b in range(B):                                                      # global rows: dense
        pos = global_mask[b].nonzero().flatten()                            # (G_b,)
        p_rows = torch.softmax(q[b, :, pos] @ k[b].transpose(-1, -2) * scale, dim=-1)  # (H, G_b, T)
        out[b, :, pos] = p_rows @ v[b]                                      # (H, G_b, Dh)
    return out
'''
    _hints = ("Build three masks: edge slots (question 1), window slots that hold a global key "
              "(`unfold_windows(global_mask, window, False)`: the `(B, T)` form of notebook 03, section 1, "
              "with `fill=False` outside the sequence), and invalid global slots (question 3).",
              "Concatenate local and global scores on the last axis and call `masked_softmax` once; "
              "then split the probabilities back and add both weighted sums.",
              "Finally overwrite the rows of the global queries: softmax over *all* keys, times v.")
    _congrats = "No double counting, no padded slot scored, and the global rows read everything."
    _reference = unfold_hybrid_attention_reference
    _cases = HYBRID_CASES


class ScatterAttentionMap(NoLoopOverT):
    id, title, _name = "03.q5", "Rebuilding the attention map by scatter", "scatter_attention_map"
    _prompt = """To *plot* the weights of the unfold version we need them as a `(B, H, T, T)` map.
Write `scatter_attention_map(p_loc, p_glob, global_idx, window)`: `p_loc` `(B, H, T, 2w+1)` holds
the window probabilities (0 on masked slots), `p_glob` `(B, H, T, G)` the global columns (0 on
invalid slots), `global_idx` `(B, G)` long the key position of each global column (0 where
invalid). Slot `r` of row `i` belongs to column `i - w + r`. No Python loop over T: use `scatter_add`
(the check runs your function at two lengths and counts its lines)."""
    _solution = '''def scatter_attention_map(p_loc, p_glob, global_idx, window):
    """(B, H, T, T) map: window slots and global columns scattered to their key columns."""
    B, H, T, R = p_loc.shape
    G = global_idx.shape[1]
    cols = torch.arange(T)[:, None] - window + torch.arange(R)[None, :]    # (T, 2w+1) key of each slot
    cols = cols.clamp(0, T - 1)               # edge slots hold 0: parking them anywhere adds nothing
    attn = torch.zeros(B, H, T, T, dtype=p_loc.dtype)
    attn = attn.scatter_add(3, cols.expand(B, H, T, R), p_loc)                         # (B, H, T, T)
    attn = attn.scatter_add(3, global_idx[:, None, None, :].expand(B, H, T, G), p_glob)  # (B, H, T, T)
    return attn
'''
    _hints = ("Column of slot r in row i: `i - window + r`, a (T, 2w+1) table; clamp it into 0..T-1.",
              "Several slots land on the same clamped column at the edges, and invalid global slots "
              "all point at column 0: `scatter` would overwrite, `scatter_add` adds their zeros harmlessly.",
              "`attn.scatter_add(3, cols.expand(B, H, T, R), p_loc)`, then the same with the global "
              "columns `global_idx[:, None, None, :].expand(B, H, T, G)`.")
    _congrats = "Two scatters: that is how tutor rebuilds the map for the plots."
    _reference = scatter_map_reference
    _compare = compare_pairs
    _no_attention = True
    _cases = HYBRID_CASES

    def _arguments(self, case):
        return _map_inputs(case)


QUESTIONS = (WindowEdgeMask(), UnfoldLocalAttention(), GatherGlobals(), UnfoldHybridAttention(),
             ScatterAttentionMap())
