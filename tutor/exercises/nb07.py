"""Exercises for notebook 07, the backward pass: the softmax backward in one line, the attention
backward by hand, recomputing one block's gradients from the saved output and log-sum-exp, and
the gradients of the global keys (every query reads them, each exactly once)."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from ..attention.softmax import row_lse
from ..attention.dense import dense_attention
from ..attention.softmax import masked_softmax
from ..masks import hybrid_mask
from .cases import Case
from .compare import compare_tensor, type_name
from .problem import FunctionProblem

NUMBER = "07"
NOTEBOOK = "07_the_backward_pass"
TITLE = "Exercises 07 · The backward pass"
INTRO = """Training needs `dq, dk, dv`. Autograd finds them by keeping every probability of the forward
pass; a memory-lean backward keeps only the output `O` and one log-sum-exp per row, and rebuilds
`P = exp(S - lse)` when it needs it. These exercises write that backward by hand, from the softmax
rule `dS = P * (dP - D)` up to the gradients of the global keys."""

#: autograd would do the exercise for the learner (Tensor.backward calls torch.autograd.backward)
_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.autograd.functional.vjp",
             "torch.autograd.functional.jacobian")


class _BuiltCase(Case):
    """A case whose tensors come from one seeded ``build()`` (they depend on each other)."""

    def tensors(self) -> Dict[str, object]:
        plain = {k: v for k, v in self.values.items() if k != "build"}
        return {**plain, **self.values["build"]()}


def compare_grads(names: tuple) -> Callable:
    """Comparator for a tuple of gradient tensors, named in the message; spots a missing ``scale``."""
    def compare(got, expected: tuple, case) -> Optional[str]:
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return (f"you returned a {type_name(got)}; return a tuple of {len(expected)} tensors "
                    f"({', '.join(names)}).")
        scale = case.values.get("scale")
        for name, g, e in zip(names, got, expected):
            problem = compare_tensor(g, e, case)
            if not problem:
                continue
            if (scale and name != "dv" and type(g) is Tensor and g.layout == torch.strided  # a hint only
                    and (g.shape, g.dtype, g.device) == (e.shape, e.dtype, e.device)    # where it can compare
                    and bool(torch.allclose(g.detach() * scale, e, rtol=1e-4, atol=1e-5))):
                return (f"{name} is off by exactly a factor 1/scale. The scores are S = scale · Q Kᵀ, so "
                        f"the chain rule brings `scale` into dQ = scale · dS K and dK = scale · dSᵀ Q.")
            return f"{name}: {problem}"
        return None
    compare.__name__ = "compare_" + "_".join(names)
    return compare


# --------------------------------------------------------------------------- q1: softmax backward
def softmax_backward_reference(p: Tensor, dp: Tensor) -> Tensor:
    """dS (..., n) of rows p = softmax(s) (..., n) given dP = dL/dp: the Jacobian-vector product."""
    return p * (dp - (p * dp).sum(-1, keepdim=True))


def _rows(shape, seed: int, masked: float = 0.0, dead_row: bool = False, std: float = 1.0):
    def build():
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(*shape, generator=g) * std
        ok = torch.rand(*shape, generator=g) >= masked
        ok[..., 0] = True                                                  # every row keeps a key ...
        if dead_row:
            ok[..., -1, :] = False                                         # ... but this one
        return {"p": masked_softmax(s, ok), "dp": torch.randn(*shape, generator=g)}
    return build


class SoftmaxBackward(FunctionProblem):
    id, title, _name = "07.q1", "The softmax backward in one line", "softmax_backward"
    _prompt = """`p = softmax(s)` along the last dimension; a later layer hands you `dp`, the gradient of the loss
with respect to `p`. Write `softmax_backward(p, dp)` returning `ds`, the gradient with respect to `s`
(same shape as `p`). The Jacobian is `∂p_j/∂s_k = p_j (δ_jk − p_k)`; multiplied by `dp` it needs
no (n × n) matrix at all. Masked keys have `p = 0`, and a row with no allowed key is all zeros."""
    _solution = '''def softmax_backward(p, dp):
    """ds (..., n): gradient w.r.t. the scores s of p = softmax(s), given dp."""
    D = (p * dp).sum(-1, keepdim=True)        # (..., 1): one number per row
    return p * (dp - D)                       # (..., n)
'''
    _hints = ("Write `ds_k = Σ_j dp_j · ∂p_j/∂s_k` and split the sum into the `δ_jk` part and the rest.",
              "The `δ_jk` part gives `p_k · dp_k`; the rest gives `−p_k · Σ_j p_j dp_j`. The sum is one "
              "number per row: keep it with `keepdim=True` so it broadcasts.",
              "`ds = p * (dp - (p * dp).sum(-1, keepdim=True))`.")
    _congrats = ("D = rowsum(P ∘ dP) is the only thing that couples the keys of a row; notebook 07 shows it "
                 "also equals rowsum(dO ∘ O), which needs no P at all.")
    _reference = softmax_backward_reference
    _forbidden = _AUTOGRAD
    _compare = compare_tensor
    _cases = (_BuiltCase("one row", {"build": _rows((1, 5), seed=0)}),
              _BuiltCase("a batch of rows", {"build": _rows((2, 3, 6), seed=1)}),
              _BuiltCase("masked keys (zeros in p)", {"build": _rows((4, 8), seed=2, masked=0.5)}),
              _BuiltCase("a row with no allowed key", {"build": _rows((3, 5), seed=3, masked=0.3, dead_row=True)}),
              _BuiltCase("one key per row", {"build": _rows((4, 1), seed=4)}),
              _BuiltCase("peaked rows (large scores)", {"build": _rows((3, 7), seed=5, std=20.0)}))


# --------------------------------------------------------------------------- q2: attention backward
def attention_backward_reference(q: Tensor, k: Tensor, v: Tensor, do: Tensor, allowed: Tensor,
                                 scale: float) -> tuple:
    """(dq, dk, dv) of out = masked_softmax(scale · q kᵀ, allowed) v, given do; by autograd."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    with torch.enable_grad():
        p = masked_softmax(scale * q @ k.transpose(-1, -2), allowed[:, None])  # (B, H, T, T)
        grads = torch.autograd.grad(p @ v, (q, k, v), do)
    return tuple(g.detach() for g in grads)


def _attn(B: int, H: int, T: int, Dh: int, seed: int, rule: str, window: int = 2):
    def build():
        g = torch.Generator().manual_seed(seed)
        q, k, v, do = (torch.randn(B, H, T, Dh, generator=g) for _ in range(4))
        d = torch.arange(T)[:, None] - torch.arange(T)[None, :]             # (T, T) i - j
        allowed = {"all": d == d, "band": d.abs() <= window, "causal": (d >= 0) & (d <= window)}[rule]
        allowed = allowed.expand(B, T, T).clone()                           # (B, T, T)
        if rule == "band" and B > 1:
            allowed[1, -1] = False                                          # a padded query: no key
        return {"q": q, "k": k, "v": v, "do": do, "allowed": allowed}
    return build


class AttentionBackward(FunctionProblem):
    id, title, _name = "07.q2", "The attention backward by hand", "attention_backward"
    _prompt = """The forward pass is `S = scale · Q Kᵀ`, `P = softmax(S)` over the allowed keys of each row (0 elsewhere,
a row with no allowed key is all zeros) and `O = P V`. Write `attention_backward(q, k, v, do, allowed, scale)`
returning the tuple `(dq, dk, dv)`, each `(B, H, T, Dh)`, given `do = dL/dO`; `allowed` is `(B, T, T)` bool,
the same for every head. Use your `softmax_backward` for the middle step; no autograd here."""
    _solution = '''def attention_backward(q, k, v, do, allowed, scale):
    """(dq, dk, dv) of O = softmax(scale * q @ k^T over allowed) @ v, given do."""
    s = scale * q @ k.transpose(-1, -2)                      # (B, H, T, T)
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    m = s.amax(-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    l = p.sum(-1, keepdim=True)
    p = p / torch.where(l > 0, l, torch.ones_like(l))        # (B, H, T, T), empty rows 0
    dv = p.transpose(-1, -2) @ do                            # (B, H, T, Dh)  Pᵀ dO
    dp = do @ v.transpose(-1, -2)                            # (B, H, T, T)   dO Vᵀ
    ds = softmax_backward(p, dp)                             # (B, H, T, T)
    dq = scale * ds @ k                                      # (B, H, T, Dh)
    dk = scale * ds.transpose(-1, -2) @ q                    # (B, H, T, Dh)
    return dq, dk, dv
'''
    _hints = ("Go backwards through the three steps: `O = P V` gives `dV` and `dP`; the softmax gives `dS`; "
              "`S = scale · Q Kᵀ` gives `dQ` and `dK`.",
              "`dV = Pᵀ dO` and `dP = dO Vᵀ`. Then `dS = softmax_backward(P, dP)` with the *normalized* P "
              "(rows summing to 1), zero where not allowed.",
              "`dQ = scale · dS K` and `dK = scale · dSᵀ Q`: the scale is part of S, so it is part of its "
              "gradient. A row with no allowed key must give P = 0, not NaN.")
    _congrats = "This is what autograd computes, and what it stores to do it: the whole (T, T) P."
    _reference = attention_backward_reference
    _forbidden = _AUTOGRAD
    _compare = compare_grads(("dq", "dk", "dv"))
    _cases = (_BuiltCase("every key allowed", {"scale": 0.5, "build": _attn(1, 2, 6, 4, seed=0, rule="all")}),
              _BuiltCase("a band, and a row with no key", {"scale": 0.5, "build": _attn(2, 1, 8, 4, seed=1, rule="band")}),
              _BuiltCase("causal band", {"scale": 0.5, "build": _attn(1, 2, 7, 4, seed=2, rule="causal")}),
              _BuiltCase("scale 0.3, Dh = 9", {"scale": 0.3, "build": _attn(2, 1, 6, 9, seed=3, rule="band", window=1)}),
              _BuiltCase("one token", {"scale": 0.5, "build": _attn(1, 1, 1, 4, seed=4, rule="all")}))


# --------------------------------------------------------------------------- q3: recompute one block
def block_backward_reference(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, do: Tensor,
                             allowed: Tensor, scale: float) -> tuple:
    """(dq, dk, dv) contributions of one block's (query, span key) pairs, from the saved out and lse."""
    s = scale * q @ k.transpose(-1, -2)                                   # (B, H, M, N)
    p = torch.where(allowed[:, None], torch.exp(s - lse[..., None]), torch.zeros_like(s))  # lse = +inf: 0
    D = (do * out).sum(-1, keepdim=True)                                  # (B, H, M, 1)
    ds = p * (do @ v.transpose(-1, -2) - D)                               # (B, H, M, N)
    return scale * ds @ k, scale * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do


def _block(B: int, H: int, M: int, N: int, n_extra: int, Dh: int, seed: int, dead: bool = False,
           only_extra: bool = False, window: int = 2):
    """A block of M queries whose rows read a band of the N span keys and n_extra other keys
    (global keys outside the span); out and lse come from the whole row, as the forward saved them."""
    def build():
        g = torch.Generator().manual_seed(seed)
        q, do = (torch.randn(B, H, M, Dh, generator=g) for _ in range(2))
        k_all, v_all = (torch.randn(B, H, N + n_extra, Dh, generator=g) for _ in range(2))
        i = torch.arange(M)[:, None] + (N - M) // 2                         # queries sit mid-span
        band = (i - torch.arange(N)[None, :]).abs() <= window               # (M, N)
        ok = torch.cat([band, torch.ones(M, n_extra, dtype=torch.bool)], 1).expand(B, M, N + n_extra).clone()
        if dead:
            ok[-1, 0] = False                                               # a padded query reads nothing
        if only_extra:
            ok[0, 1, :N] = False                                            # reads only the far keys
        scale = Dh ** -0.5
        s = (scale * q @ k_all.transpose(-1, -2)).masked_fill(~ok[:, None], float("-inf"))
        lse = row_lse(s)                                                    # (B, H, M); +inf: no key
        out = masked_softmax(s, ok[:, None]) @ v_all                        # (B, H, M, Dh)
        return {"q": q, "k": k_all[:, :, :N], "v": v_all[:, :, :N], "out": out, "lse": lse, "do": do,
                "allowed": ok[:, :, :N]}
    return build


class BlockBackward(FunctionProblem):
    id, title, _name = "07.q3", "Recompute one block's gradients", "block_backward"
    _prompt = """A lean forward pass kept only `out` (B, H, M, Dh) and `lse` (B, H, M), the log-sum-exp of each query's
scores over **all** its allowed keys (`+inf` for a row with no key, so that `exp(s - lse)` is exactly 0
there). Now the backward pass visits one block: `q` (B, H, M, Dh) queries against `k, v` (B, H, N, Dh),
the keys of the block's span, with `allowed` (B, M, N) bool. A row may also read keys outside this
span (global keys), whose pairs another step handles. Write
`block_backward(q, k, v, out, lse, do, allowed, scale)` returning this block's contributions
`(dq, dk, dv)`: `dq` (B, H, M, Dh) from these pairs, `dk, dv` (B, H, N, Dh)."""
    _solution = '''def block_backward(q, k, v, out, lse, do, allowed, scale):
    """(dq, dk, dv) of this block's pairs, recomputing P from the saved lse."""
    s = scale * q @ k.transpose(-1, -2)                                  # (B, H, M, N)
    p = torch.where(allowed[:, None], torch.exp(s - lse[..., None]), torch.zeros_like(s))  # lse = +inf: 0
    D = (do * out).sum(-1, keepdim=True)                                 # (B, H, M, 1) = rowsum(P * dP)
    ds = p * (do @ v.transpose(-1, -2) - D)                              # (B, H, M, N)
    return scale * ds @ k, scale * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do
'''
    _hints = ("The probabilities of this block are `P = exp(S - lse)` on the allowed pairs: the saved `lse` "
              "already normalizes over the whole row. Do not take a new softmax over the span.",
              "`D` must be the row's full `rowsum(P ∘ dP)`, over every key the row reads; the span alone "
              "misses the global keys. `rowsum(dO ∘ O)` is the same number and needs only what was saved.",
              "A row with no key saved `lse = +inf`, so `exp(s - lse)` is already 0 there: no guard. Still keep "
              "`P` to the `allowed` pairs (the span's other scores are finite). Then "
              "`dV = Pᵀ dO`, `dS = P ∘ (dO Vᵀ − D)`, `dQ = scale · dS K`, `dK = scale · dSᵀ Q`.")
    _congrats = ("That is the whole recompute trick: the only per-row state the backward needs is lse and D, "
                 "so the blocked backward holds one block's P at a time.")
    _reference = block_backward_reference
    _forbidden = _AUTOGRAD
    _compare = compare_grads(("dq", "dk", "dv"))
    _cases = (_BuiltCase("the span holds every key of the rows",
                         {"scale": 0.5, "build": _block(1, 2, 4, 8, 0, 4, seed=0)}),
              _BuiltCase("rows also read 2 global keys outside the span",
                         {"scale": 0.5, "build": _block(1, 2, 4, 8, 2, 4, seed=1)}),
              _BuiltCase("a padded query (lse = +inf)",
                         {"scale": 0.5, "build": _block(2, 1, 4, 8, 1, 4, seed=2, dead=True)}),
              _BuiltCase("a query that reads only keys outside the span",
                         {"scale": 0.5, "build": _block(1, 2, 4, 8, 3, 4, seed=3, only_extra=True)}),
              _BuiltCase("Dh = 9, a wider band", {"scale": 9 ** -0.5,
                                                  "build": _block(1, 1, 6, 10, 1, 9, seed=4, window=4)}))


# --------------------------------------------------------------------------- q4: the global keys
def global_key_grads_reference(q: Tensor, k: Tensor, v: Tensor, do: Tensor, out: Tensor, lse: Tensor,
                               window: int, global_positions: List[int], scale: float) -> tuple:
    """(dk, dv) rows (B, H, G, Dh) of the global keys under the rule of docs/spec.md, by autograd of dense."""
    B, H, T, _ = q.shape
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, list(global_positions)] = True
    kpm = lse[:, 0] == float("inf")                                      # (B, T) rows that read nothing
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    with torch.enable_grad():
        o = dense_attention(q, k, v, window, gm, kpm, scale=scale)
        dk, dv = torch.autograd.grad(o, (k, v), do)
    pos = list(global_positions)
    return dk[:, :, pos].detach(), dv[:, :, pos].detach()


def _hybrid(B: int, H: int, T: int, Dh: int, window: int, positions, seed: int, pad: int = 0,
            scale: Optional[float] = None):
    def build():
        g = torch.Generator().manual_seed(seed)
        q, k, v, do = (torch.randn(B, H, T, Dh, generator=g) for _ in range(4))
        gm = torch.zeros(B, T, dtype=torch.bool)
        gm[:, list(positions)] = True
        kpm = torch.zeros(B, T, dtype=torch.bool)
        if pad:
            kpm[-1, T - pad:] = True                                        # last sequence's tail
        sc = Dh ** -0.5 if scale is None else scale
        ok = hybrid_mask(T, window, gm, kpm)[:, None]                       # (B, 1, T, T)
        s = (sc * q @ k.transpose(-1, -2)).masked_fill(~ok, float("-inf"))
        out = dense_attention(q, k, v, window, gm, kpm, scale=sc)          # (B, H, T, Dh)
        return {"q": q, "k": k, "v": v, "do": do, "out": out, "lse": row_lse(s)}
    return build


class GlobalKeyGrads(FunctionProblem):
    id, title, _name = "07.q4", "The gradients of the global keys", "global_key_grads"
    _prompt = """Hybrid attention ([the rule](../docs/spec.md)): a local window of radius `window`, and the global tokens at
`global_positions` (the same for every sequence) read every key and are read by every query; each
(query, key) pair counts once. The forward saved `out` and `lse` (B, H, T) (`+inf` on padded rows,
which read nothing). Write `global_key_grads(q, k, v, do, out, lse, window, global_positions, scale)`
returning `(dk_g, dv_g)`, each `(B, H, G, Dh)`: the **full** gradients of the G global keys, in the
order of `global_positions`. The blocked backward gets them in two pieces (the queries whose window
holds the key, then the global column of all the others); here you may sum over the queries directly."""
    _solution = '''def global_key_grads(q, k, v, do, out, lse, window, global_positions, scale):
    """(dk_g, dv_g) (B, H, G, Dh): full gradients of the global keys."""
    kg, vg = k[:, :, global_positions], v[:, :, global_positions]     # (B, H, G, Dh)
    s = scale * q @ kg.transpose(-1, -2)                                # (B, H, T, G)
    p = torch.exp(s - lse[..., None])                                   # every query once; lse = +inf: 0
    D = (do * out).sum(-1, keepdim=True)                                # (B, H, T, 1)
    ds = p * (do @ vg.transpose(-1, -2) - D)                            # (B, H, T, G)
    return scale * ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ do   # (B, H, G, Dh) each
'''
    _hints = ("Which queries read global key g? Every query that reads anything at all, whether g sits in "
              "its window or not. So the sum runs over all T queries, padded rows excepted.",
              "Split into window + global column only if you keep the column to the queries *outside* the "
              "window: a query inside it is one pair, not two. Forgetting the column loses most of the "
              "gradient.",
              "`P[:, :, :, g] = exp(scale · q · k_g − lse)` (0 on padded rows, whose lse is +inf), `dS = P ∘ (dO v_gᵀ − D)` with "
              "`D = rowsum(dO ∘ O)`, then `dk_g = scale · dSᵀ Q` and `dv_g = Pᵀ dO`.")
    _congrats = ("Every query adds to the G global keys: in the Triton backward those few rows of dk, dv are "
                 "the one place where programs must add into the same memory.")
    _reference = global_key_grads_reference
    _forbidden = _AUTOGRAD
    _compare = compare_grads(("dk_g", "dv_g"))
    _cases = (_BuiltCase("one global key in the middle", {"window": 2, "global_positions": [5], "scale": 0.5,
                                                          "build": _hybrid(1, 2, 12, 4, 2, [5], seed=0)}),
              _BuiltCase("global keys at both ends", {"window": 1, "global_positions": [0, 11], "scale": 0.5,
                                                      "build": _hybrid(2, 1, 12, 4, 1, [0, 11], seed=1)}),
              _BuiltCase("two global keys inside each other's window",
                         {"window": 2, "global_positions": [4, 5], "scale": 0.5,
                          "build": _hybrid(1, 2, 10, 4, 2, [4, 5], seed=2)}),
              _BuiltCase("window 0", {"window": 0, "global_positions": [3], "scale": 0.5,
                                      "build": _hybrid(1, 1, 8, 4, 0, [3], seed=3)}),
              _BuiltCase("padded tail", {"window": 1, "global_positions": [2], "scale": 0.5,
                                         "build": _hybrid(2, 1, 10, 4, 1, [2], seed=4, pad=4)}),
              _BuiltCase("window >= T", {"window": 20, "global_positions": [1], "scale": 0.5,
                                         "build": _hybrid(1, 1, 6, 4, 20, [1], seed=5)}),
              _BuiltCase("scale 0.2, Dh = 9", {"window": 2, "global_positions": [6], "scale": 0.2,
                                               "build": _hybrid(1, 1, 12, 9, 2, [6], seed=6, scale=0.2)}))


QUESTIONS = (SoftmaxBackward(), AttentionBackward(), BlockBackward(), GlobalKeyGrads())
