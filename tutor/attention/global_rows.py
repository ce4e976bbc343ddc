"""The global rows: a global query reads every allowed key, in one dense G x T pass.

Every backend computes the same thing for its G global queries ``qg`` (B, H, G, Dh): their
scores against the keys, masked to the **allowed** keys (not padding, not an invalid slot, and
when causal only keys at or before the global token's own position ``idx``), their
probabilities, their output rows and their log-sum-exp (``+inf`` for a row with no allowed key,
:func:`.softmax.row_lse`). Memory is G x T: linear in T for a fixed G.

* :func:`global_rows` - output rows, probabilities and lse (blocked, the layer, Triton's reference);
* :func:`global_rows_backward` - their gradients, recomputed from the saved lse (the lean and the
  Triton backward passes);
* :func:`global_rows_partial` - the rows over a slice of the keys as a :class:`SoftmaxState`,
  which :func:`merge_states` (the log-sum-exp merge) combines: sequence parallelism runs one
  slice per rank (:mod:`tutor.distributed.merge`).

The functions take the global queries themselves, gathered by the caller
(:func:`.global_tokens.gather_tokens`) or made by Longformer's separate projection, and explicit
tensors: ``idx, valid`` (B, G) the global positions and which slots are real, ``key_padding_mask``
(B, n) or None, ``acc`` the accumulation dtype (:func:`.softmax.accum_dtype`). Padded keys and
values are zeroed before a product, so a NaN or inf outside the mask never reaches a row (not
even as ``0 * NaN``).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .softmax import accum_dtype, probs_from_lse, row_lse

__all__ = ["GlobalRows", "SoftmaxState", "global_allowed", "global_scores", "global_query_probs", "global_rows",
           "global_rows_backward", "global_rows_partial", "partial_state", "rescale_state", "merge_states",
           "finish", "zero_padded"]


def zero_padded(x: Tensor, key_padding_mask: Optional[Tensor], acc: torch.dtype) -> Tensor:
    """x (B, H, n, Dh) in ``acc``, exactly 0 at padded positions (key_padding_mask (B, n) or None)."""
    x = x.to(acc)
    return x if key_padding_mask is None else x.masked_fill(key_padding_mask[:, None, :, None], 0)


def global_allowed(idx: Tensor, valid: Tensor, key_padding_mask: Optional[Tensor], causal: bool,
                   key_pos: Tensor) -> Tensor:
    """(B, 1, G, n) bool: which keys each global query reads.

    idx, valid: (B, G) positions of the global queries and their real slots; key_pos (n,) the
    positions of the keys in the whole sequence (a rank's slice under sequence parallelism);
    key_padding_mask (B, n) or None, over those keys.
    """
    ok = valid[:, :, None].expand(-1, -1, key_pos.shape[0])                # (B, G, n)
    if key_padding_mask is not None:
        ok = ok & ~key_padding_mask[:, None, :]
    if causal:
        ok = ok & (key_pos[None, None, :] <= idx[:, :, None])
    return ok[:, None]                                                     # (B, 1, G, n)


def global_scores(qg: Tensor, k: Tensor, idx: Tensor, valid: Tensor, key_padding_mask: Optional[Tensor],
                  causal: bool, scale: float, acc: torch.dtype, key_pos: Optional[Tensor] = None) -> Tensor:
    """Scores ``qg k^T * scale`` (B, H, G, n) in ``acc``, ``-inf`` where a key is not allowed.

    qg: (B, H, G, Dh) global queries; k: (B, H, n, Dh), keys at ``key_pos`` (n,) (default ``0 .. n-1``).
    """
    if key_pos is None:
        key_pos = torch.arange(k.shape[2], device=k.device)
    s = (qg.to(acc) @ k.to(acc).transpose(-1, -2)).mul_(scale)             # (B, H, G, n)
    return s.masked_fill_(~global_allowed(idx, valid, key_padding_mask, causal, key_pos), float("-inf"))


def global_query_probs(qg: Tensor, k: Tensor, idx: Tensor, valid: Tensor, key_padding_mask: Optional[Tensor],
                       causal: bool, scale: float, acc: torch.dtype = torch.float32) -> Tensor:
    """Probabilities (B, H, G, T) in ``acc`` of the global queries qg (B, H, G, Dh) over k (B, H, T, Dh).

    Zero rows for invalid (padded) slots.
    """
    s = global_scores(qg, k, idx, valid, key_padding_mask, causal, scale, acc)   # (B, H, G, T)
    return probs_from_lse(s, row_lse(s))


class GlobalRows(NamedTuple):
    """What :func:`global_rows` returns, all in the accumulation dtype."""
    out: Tensor     # (B, H, G, Dh) output rows (dropout applied)
    probs: Tensor   # (B, H, G, T) probabilities (before dropout); zero rows for invalid slots
    lse: Tensor     # (B, H, G) log-sum-exp; +inf for a row with no allowed key


def global_rows(qg: Tensor, k: Tensor, v: Tensor, idx: Tensor, valid: Tensor, key_padding_mask: Optional[Tensor],
                causal: bool, scale: float, acc: torch.dtype, dropout_p: float = 0.0) -> GlobalRows:
    """The global queries' rows: qg (B, H, G, Dh) over k, v (B, H, T, Dh). See :class:`GlobalRows`.

    ``dropout_p`` drops probabilities before the product with v (training only: pass 0 otherwise).
    """
    s = global_scores(qg, k, idx, valid, key_padding_mask, causal, scale, acc)   # (B, H, G, T)
    lse = row_lse(s)                                                       # (B, H, G)
    p = probs_from_lse(s, lse)                                             # (B, H, G, T)
    p_drop = F.dropout(p, dropout_p) if dropout_p > 0 else p
    return GlobalRows(p_drop @ zero_padded(v, key_padding_mask, acc), p, lse)    # (B, H, G, Dh), ...


def global_rows_backward(qg: Tensor, k: Tensor, v: Tensor, idx: Tensor, valid: Tensor,
                         key_padding_mask: Optional[Tensor], causal: bool, scale: float, acc: torch.dtype,
                         lse: Tensor, out_g: Tensor, dout_g: Tensor, *, dk: Optional[Tensor] = None,
                         dv: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of the global rows, their probabilities recomputed from the saved ``lse`` (B, H, G).

    qg, out_g, dout_g: (B, H, G, Dh) the global queries, their output rows and the gradient of
    those rows; k, v: (B, H, T, Dh). Returns ``dqg`` (B, H, G, Dh) and the rows' contributions to
    ``dk, dv`` (B, H, T, Dh), in ``acc``; invalid slots add exact zeros. Given ``dk``, ``dv``
    (contiguous (B, H, T, Dh) in ``acc``), the contributions are added into them in place, with no
    (B, H, T, Dh) temporaries, and they are returned. With ``D = rowsum(dO * O)``::

        dP = dO V^T,   dS = P * (dP - D),   dqg = scale dS K,   dK = scale dS^T qg,   dV = P^T dO
    """
    dead = ~valid[:, None, :, None]                                        # (B, 1, G, 1) invalid slots
    qg = qg.to(acc).masked_fill(dead, 0)                                   # (B, H, G, Dh)
    s = global_scores(qg, k, idx, valid, key_padding_mask, causal, scale, acc)   # (B, H, G, T)
    p = probs_from_lse(s, lse.masked_fill(dead[..., 0], float("inf")), inplace=True)  # (B, H, G, T)
    do = dout_g.to(acc).masked_fill(dead, 0)                               # (B, H, G, Dh)
    D = (do * out_g.to(acc).masked_fill(dead, 0)).sum(-1, keepdim=True)    # (B, H, G, 1)
    ds = (do @ zero_padded(v, key_padding_mask, acc).transpose(-1, -2)).sub_(D).mul_(p)  # (B, H, G, T)
    dqg = (ds @ zero_padded(k, key_padding_mask, acc)).mul_(scale)         # (B, H, G, Dh)
    B, H, G, T = ds.shape
    if dk is None:
        dk = (ds.transpose(-1, -2) @ qg).mul_(scale)                       # (B, H, T, Dh)
    else:
        dk.view(B * H, T, -1).baddbmm_(ds.reshape(B * H, G, T).transpose(1, 2), qg.reshape(B * H, G, -1), alpha=scale)
    if dv is None:
        dv = p.transpose(-1, -2) @ do                                      # (B, H, T, Dh)
    else:
        dv.view(B * H, T, -1).baddbmm_(p.reshape(B * H, G, T).transpose(1, 2), do.reshape(B * H, G, -1))
    return dqg, dk, dv


class SoftmaxState(NamedTuple):
    """Partial softmax of some rows over some keys: m, l (..., 1) and o (..., Dh), in the accumulation dtype."""
    m: Tensor   # running max of the scores, -inf where no key was allowed
    l: Tensor   # sum of exp(s - m)
    o: Tensor   # sum of exp(s - m) · v  (unnormalised output)


def partial_state(scores: Tensor, allowed: Optional[Tensor], v: Tensor) -> SoftmaxState:
    """State of rows ``scores`` (..., G, n) over n keys ``v`` (..., n, Dh).

    ``allowed`` broadcasts against ``scores``; None when ``scores`` already hold ``-inf`` where
    not allowed. ``v`` must be finite at the keys that are not allowed (``0 * NaN`` is NaN).
    """
    acc = accum_dtype(scores.dtype)
    s = scores.to(acc) if allowed is None else scores.to(acc).masked_fill(~allowed, float("-inf"))  # (..., G, n)
    m = s.amax(dim=-1, keepdim=True).detach()                              # (..., G, 1); only shifts
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))  # (..., G, n), 0 where not allowed
    return SoftmaxState(m, p.sum(dim=-1, keepdim=True), p @ v.to(acc))     # (..., G, 1), (..., G, 1), (..., G, Dh)


def global_rows_partial(qg: Tensor, k: Tensor, v: Tensor, idx: Tensor, valid: Tensor,
                        key_padding_mask: Optional[Tensor], causal: bool, scale: float, acc: torch.dtype,
                        key_pos: Tensor) -> SoftmaxState:
    """The global rows over one slice of the keys: k, v (B, H, n, Dh) at positions ``key_pos`` (n,).

    qg: (B, H, G, Dh); idx (B, G) positions in the whole sequence. :func:`merge_states` joins the
    states of the slices; :func:`finish` gives the rows (B, H, G, Dh).
    """
    s = global_scores(qg, k, idx, valid, key_padding_mask, causal, scale, acc, key_pos)  # (B, H, G, n)
    return partial_state(s, None, zero_padded(v, key_padding_mask, acc))


def rescale_state(state: SoftmaxState, M: Tensor) -> SoftmaxState:
    """The state relative to a max ``M >= state.m`` (a state with no key contributes 0)."""
    factor = torch.where(torch.isfinite(state.m), torch.exp(state.m - torch.where(torch.isfinite(M), M, 0.0)), 0.0)
    return SoftmaxState(M, state.l * factor, state.o * factor)


def merge_states(a: SoftmaxState, b: SoftmaxState) -> SoftmaxState:
    """The state over the keys of both ``a`` and ``b`` (the log-sum-exp merge)::

        M = max(m_a, m_b),   l = l_a e^(m_a - M) + l_b e^(m_b - M),   o = o_a e^(m_a - M) + o_b e^(m_b - M)
    """
    M = torch.maximum(a.m, b.m)
    a, b = rescale_state(a, M), rescale_state(b, M)
    return SoftmaxState(M, a.l + b.l, a.o + b.o)


def finish(state: SoftmaxState) -> Tensor:
    """Softmax output ``o / l`` (..., G, Dh); rows without any allowed key give zeros, not NaN."""
    return state.o / torch.where(state.l > 0, state.l, torch.ones_like(state.l))
