"""Exercises for notebook 02, looped sparse attention: allowed keys, the loop, the causal rule."""
from __future__ import annotations

from typing import List, Sequence

from ..attention import looped_attention
from ..attention.looped import allowed_keys
from .cases import HYBRID_CASES, Case
from .compare import compare_sorted_ints
from .problem import AttentionProblem, FunctionProblem

NUMBER = "02"
NOTEBOOK = "02_looped_sparse_attention"
TITLE = "Exercises 02 · Looped sparse attention"
INTRO = """The clearest sparse attention is a loop: for each query, list the keys it may attend,
score only those, take a small softmax. Written as a *set* of keys, no pair is counted twice, and a
global query simply lists every key."""

_CONFIGS = (("no global token", 8, 2, ()),
            ("a global token inside windows", 12, 2, (0, 5)),
            ("window 0", 6, 0, (2,)),
            ("window >= T", 5, 7, (1,)),
            ("a global token at the last position", 9, 3, (8,)))
_KEY_BUILDERS = ("tutor.attention.looped.allowed_keys", "tutor.masks.hybrid_mask")


def _flags(T: int, positions: Sequence[int]):
    return lambda: [j in positions for j in range(T)]


def _key_cases():
    return tuple(Case(f"{name}, global tokens at {list(globs)}" if globs else name,
                      {"i": i, "T": T, "window": w, "is_global": _flags(T, globs)})
                 for name, T, w, globs in _CONFIGS for i in range(T))


def allowed_keys_reference(i: int, T: int, window: int, is_global: List[bool]) -> List[int]:
    """Sorted keys query ``i`` may attend (no padding, not causal)."""
    return allowed_keys(i, T, window, is_global)


def causal_allowed_keys_reference(i: int, T: int, window: int, is_global: List[bool]) -> List[int]:
    """Sorted keys query ``i`` may attend under the causal rule."""
    return allowed_keys(i, T, window, is_global, causal=True)


def looped_attention_reference(q, k, v, window, global_mask):
    """The attention of docs/spec.md, non-causal, no padding: (B, H, T, Dh)."""
    return looped_attention(q, k, v, window, global_mask)


class AllowedKeys(FunctionProblem):
    id, title, _name = "02.q1", "The keys one query may attend", "allowed_keys"
    _prompt = """Write `allowed_keys(i, T, window, is_global)` where `is_global` is a Python list of
`T` bools. Return the **sorted list** of key positions query `i` may attend: its window
`|i - j| <= window` (inside `0 .. T-1`), every global key, and, if `i` itself is global, every key.
No key may appear twice. (`tutor.attention.looped.allowed_keys` has the same four arguments, and two
optional ones for later: `is_pad` and `causal`.)"""
    _solution = '''def allowed_keys(i, T, window, is_global):
    """Sorted list of the keys query i may attend."""
    if is_global[i]:
        return list(range(T))                                       # a global row reads every key
    keys = set(range(max(0, i - window), min(T, i + window + 1)))   # the window, clipped to 0..T-1
    keys |= {j for j in range(T) if is_global[j]}                   # everyone reads the global keys
    return sorted(keys)                                             # a set: no key twice
'''
    _hints = ("Collect the keys in a Python `set`: adding a key twice keeps it once.",
              "The window is `range(max(0, i - window), min(T, i + window + 1))`; then add every j with "
              "`is_global[j]`.",
              "Do not forget the other half of global attention: when `is_global[i]` the query reads "
              "all T keys.")
    _congrats = "The set makes 'each pair once' automatic, and the global row is just 'all keys'."
    _reference = allowed_keys_reference
    _compare = compare_sorted_ints
    _forbidden = _KEY_BUILDERS
    _cases = _key_cases()


class LoopedAttention(AttentionProblem):
    id, title, _name = "02.q2", "Attention, one query at a time", "looped_attention"
    _prompt = """Write `looped_attention(q, k, v, window, global_mask)` with a Python loop over
the batch and the queries. `q, k, v` are `(B, H, T, Dh)`, `global_mask` is `(B, T)` bool. For
query `i` of sequence `batch`, score only its allowed keys (your `allowed_keys`), scale by
`1 / sqrt(Dh)`, take a softmax over those keys and average their values. All heads can be done at
once. Return `(B, H, T, Dh)` and leave the inputs unchanged."""
    _solution = '''def looped_attention(q, k, v, window, global_mask):
    """(B, H, T, Dh): hybrid attention with a loop over (batch, i)."""
    B, H, T, Dh = q.shape
    out = torch.zeros_like(q)                                          # (B, H, T, Dh)
    for batch in range(B):
        is_global = global_mask[batch].tolist()
        for i in range(T):
            keys = torch.tensor(allowed_keys(i, T, window, is_global))   # (|A(i)|,) the allowed keys
            scores = k[batch, :, keys] @ q[batch, :, i, :, None] / Dh ** 0.5  # (H, |A(i)|, 1)
            p = torch.softmax(scores[..., 0], dim=-1)                   # (H, |A(i)|)
            out[batch, :, i] = (p[:, None, :] @ v[batch, :, keys])[:, 0]  # (H, Dh)
    return out
'''
    _hints = ("Start from `out = torch.zeros_like(q)` and fill `out[batch, :, i]` for every (batch, i).",
              "With `keys = torch.tensor(allowed_keys(...))`, `k[batch, :, keys]` is (H, |A(i)|, Dh): the "
              "scores of query i are that times `q[batch, :, i]`, divided by sqrt(Dh).",
              "`p = torch.softmax(scores, dim=-1)` is (H, |A(i)|); `(p[:, None, :] @ v[batch, :, keys])[:, 0]` "
              "is the (H, Dh) output row.")
    _congrats = "Slow, but every rule is visible. The next notebooks make it fast without changing the answer."
    _reference = looped_attention_reference
    _cases = HYBRID_CASES


class CausalAllowedKeys(FunctionProblem):
    id, title, _name = "02.q3", "The causal rule", "causal_allowed_keys"
    _prompt = """A decoder must never read the future. Write `causal_allowed_keys(i, T, window,
is_global)`: the sorted keys query `i` may attend when, **on top of** the rules of question 1,
every key must satisfy `j <= i`. (So a global query reads every *earlier* key, and a global key is
read only by queries at or after it.)"""
    _solution = '''def causal_allowed_keys(i, T, window, is_global):
    """Sorted keys query i may attend under the causal rule."""
    return [j for j in allowed_keys(i, T, window, is_global) if j <= i]   # causal = and j <= i
'''
    _hints = ("The causal rule does not replace the others: it is an extra condition, joined with *and*.",
              "Take the keys of question 1 and keep those with `j <= i`; the local part becomes "
              "`0 <= i - j <= window`.")
    _congrats = "Causal is one more 'and': it also trims the global rows and columns."
    _reference = causal_allowed_keys_reference
    _compare = compare_sorted_ints
    _forbidden = _KEY_BUILDERS
    _cases = _key_cases()


QUESTIONS = (AllowedKeys(), LoopedAttention(), CausalAllowedKeys())
