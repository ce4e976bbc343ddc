"""How much work a hybrid attention does: pair counts, the blocked backend's formulas, a cost model.

This is the one home of the course's cost formulas. The blocked backend takes its block size
``b``, its key span ``S`` and its chunk budget from here, so the cost model and the code cannot
drift apart (``tests/test_costs.py`` counts the matmuls a blocked forward really runs and
measures what it really allocates). Of ours it imports only the validators of :mod:`tutor.arguments`:
masks are plain predicates ``mask_mod(batch, head, q_idx, kv_idx)`` or bool tensors, both counted
by :func:`count_allowed`.

* :func:`count_allowed`      - the pair counter: allowed (batch, i, j) of a bool mask or a mask mod.
* :func:`hybrid_pairs`       - the same count for the hybrid rule, in closed form (O(T * G), no mask).
* :func:`default_block_size`, :func:`key_span`, :func:`blocks_per_chunk` - the blocked backend's
  block ``b``, span ``S = (2 n_side + 1) b`` and chunk of ``n`` query blocks.
* :func:`attention_cost`     - predicted FLOPs and peak memory of dense, unfold and hybrid.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .arguments import check_flag, check_int, check_window

__all__ = ["count_allowed", "hybrid_pairs", "default_block_size", "key_span", "blocks_per_chunk",
           "attention_cost", "IMPLS", "CHUNK_ELEMENTS", "CUDA_CHUNK_ELEMENTS"]

#: score elements one chunk of query blocks may hold at once on CPU (cache-friendly chunks)
CHUNK_ELEMENTS = 1 << 20
#: the same on CUDA, where fewer and larger launches win
CUDA_CHUNK_ELEMENTS = 1 << 26
#: the implementations :func:`attention_cost` models
IMPLS = ("dense", "unfold", "hybrid")


def count_allowed(mask: Union[Tensor, Callable], T: Optional[int] = None, B: int = 1, *,
                  max_elements: int = 1 << 24) -> int:
    """Allowed (batch, query, key) triples: of a bool mask, or of a mask mod over B sequences of length T.

    ``count_allowed(hybrid_mask(T, w, gm))`` sums a materialized (B, T, T) mask;
    ``count_allowed(mask_mod, T)`` evaluates the predicate on blocks of query rows of at most
    ``max_elements`` pairs each, so memory stays O(max_elements) whatever T is, and never builds
    the (T, T) mask. Both give the same number for the same rule.
    """
    if isinstance(mask, Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype} (shape {tuple(mask.shape)})")
        if T is not None:
            raise TypeError("count_allowed(mask) takes T only with a mask mod; a mask tensor has its own T")
        return int(mask.sum().item())
    if not callable(mask):
        raise TypeError(f"mask must be a bool tensor or a mask mod (batch, head, q_idx, kv_idx) -> bool, "
                        f"got {type(mask).__name__}")
    if T is None:
        raise TypeError("count_allowed(mask_mod, T): a mask mod needs the sequence length T")
    T, B = check_int("T", T, 1), check_int("B", B, 1)
    max_elements = check_int("max_elements", max_elements, 1)
    rows = max(1, max_elements // (B * T))
    kv_idx = torch.arange(T)[None, None, :]                                # (1, 1, T)
    batch = torch.arange(B)[:, None, None]                                 # (B, 1, 1)
    head = torch.zeros((), dtype=torch.long)
    total = 0
    for i0 in range(0, T, rows):
        q_idx = torch.arange(i0, min(T, i0 + rows))[None, :, None]         # (1, rows, 1)
        total += int(mask(batch, head, q_idx, kv_idx).expand(B, q_idx.shape[1], T).sum())  # (B, rows, T)
    return total


def hybrid_pairs(T: int, window: int, global_positions: Sequence[int] = (), *, causal: bool = False) -> int:
    """Pairs the hybrid rule of docs/spec.md allows in one sequence, in O(T * G) (no T x T mask).

    Local keys per row ``hi - lo + 1`` (clipped at the ends), plus the global keys outside the
    window (each pair counts once), and global rows read all ``T`` keys (``i + 1`` causal).
    Equals ``count_allowed(hybrid_mask(T, window, gm, causal=causal))`` for a one-row ``gm``.
    """
    T, window, causal = check_int("T", T, 1), check_window(window), check_flag("causal", causal)
    i = torch.arange(T)
    lo = (i - window).clamp(min=0)
    hi = i if causal else (i + window).clamp(max=T - 1)
    count = hi - lo + 1                                                    # (T,) local keys per row
    g = torch.tensor(sorted(set(int(p) for p in global_positions)), dtype=torch.long)
    if g.numel():
        if g[0] < 0 or g[-1] >= T:
            raise ValueError(f"global_positions must lie in 0..{T - 1}, got {g.tolist()} (T={T})")
        outside = (g[None, :] < lo[:, None]) | (g[None, :] > hi[:, None])  # (T, G) not in the window
        if causal:
            outside &= g[None, :] <= i[:, None]
        count = count + outside.sum(1)
        count[g] = (g + 1) if causal else T                                # global rows read all
    return int(count.sum())


def default_block_size(offset: int, T: int) -> int:
    """Query block ``b``: the power of two nearest ``offset`` within [32, 128], at most about T.

    ``offset`` is the farthest local key ``|i - j|``: the window ``w``, or ``w * dilation`` for a
    dilated window. With ``b = w`` a block's span is exactly 3 blocks (``b + 2w = 3b``): matmuls
    big enough to be efficient, and only 1.5x the allowed pairs scored inside the span.
    A formula on numbers already checked (no validation).
    """
    b = 1 << min(7, max(5, round(math.log2(max(offset, 1)))))
    return max(1, min(b, 1 << math.ceil(math.log2(T))))


def key_span(offset: int, b: int, causal: bool = False) -> Tuple[int, int]:
    """``(n_side, S)``: key blocks on each side of a query block and the span of keys it scores.

    ``offset`` is the farthest local key ``|i - j|``, ``w * dilation``. A query block ``n`` (queries
    ``n*b .. n*b+b-1``) needs keys ``n*b - offset .. n*b+b-1 + offset``: the key blocks
    ``n - n_side .. n + n_side`` with ``n_side = ceil(offset / b)``, so ``S = (2*n_side + 1) * b``
    keys (``(n_side + 1) * b`` when causal). At w = 16, b = 32: n_side = 1, S = 96.
    A formula on numbers already checked (no validation).
    """
    n_side = math.ceil(offset / b)
    return n_side, (n_side + 1 if causal else 2 * n_side + 1) * b


def blocks_per_chunk(BH: int, b: int, span: int, G: int, cuda: bool = False) -> int:
    """Query blocks ``n`` one chunk of the blocked backend holds: its (n*B*H, b, S+G) scores fit the budget.

    A formula on numbers already checked (no validation)."""
    budget = CUDA_CHUNK_ELEMENTS if cuda else CHUNK_ELEMENTS
    return max(1, budget // max(1, BH * b * (span + G)))


def attention_cost(impl: str, T: int, window: int, G: int = 0, *, B: int = 1, H: int = 1,
                   Dh: int = 64, causal: bool = False, bytes_per_element: int = 4) -> Dict[str, float]:
    """Predicted ``{"flops", "memory_bytes"}`` of one CPU forward pass of ``impl`` in IMPLS.

    FLOPs count the two matmuls (scores, then probs @ V: 2 FLOPs per multiply-add each), as the
    code runs them, masked pairs included:

    * dense ``4 BH T^2 Dh``;
    * unfold ``4 BH Dh (T (2w+1+G) + G T)``;
    * hybrid ``4 BH Dh (n_blocks b (S+G) + G T)`` with ``b`` = :func:`default_block_size`,
      ``S`` = :func:`key_span` (``(2 n_side + 1) b``; ``(n_side + 1) b`` causal). The ``G T`` term
      is the dense pass of the global rows.

    Memory (elements x ``bytes_per_element``, the score dtype; masks count 1 byte) is q, k, v, out
    (``4 BHT Dh``) plus what the implementation holds at its peak, as measured on CPU:

    * dense: four (B, H, T, T) float tensors inside the softmax (scores, masked scores, shifted
      scores, exponentials) and the (B, T, T) bool mask;
    * unfold: one (B, H, T, 2w+1, Dh) window made contiguous for a matmul at a time, three
      ``BHT (2w+1+G)`` score-sized tensors and the ``BHGT`` probabilities of the global rows;
    * hybrid: per chunk of ``n`` blocks (:func:`blocks_per_chunk`) two ``BH n b (S+G)``
      score-sized tensors (the pieces and their concatenation, then the scores and the
      probabilities; a chunk's tensors are released before the next chunk's), the chunk's q and
      output blocks and its ``n + S/b - 1`` K blocks (its V blocks replace them), and the global rows.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    T, B, H, Dh = (check_int(name, val, 1) for name, val in (("T", T), ("B", B), ("H", H), ("Dh", Dh)))
    window, G = check_window(window), check_int("G", G, 0)
    causal = check_flag("causal", causal)
    bytes_per_element = check_int("bytes_per_element", bytes_per_element, 1)
    if G > T:
        raise ValueError(f"G must be <= T, got G={G}, T={T}")
    BH, io = B * H, 4 * B * H * T * Dh
    if impl == "dense":
        macs, elems, mask_bytes = BH * T * T * Dh, 4 * BH * T * T, B * T * T
    elif impl == "unfold":
        scores = BH * T * (2 * window + 1 + G)                             # (B, H, T, 2w+1+G)
        macs = BH * Dh * (T * (2 * window + 1 + G) + G * T)
        elems, mask_bytes = BH * T * (2 * window + 1) * Dh + 3 * scores + BH * G * T, 0
    else:
        b = default_block_size(window, T)
        n_side, S = key_span(window, b, causal)
        nb = math.ceil(T / b)
        n = min(nb, blocks_per_chunk(BH, b, S, G))
        scores = BH * n * b * (S + G)                                      # (n*B*H, b, S+G)
        macs = BH * Dh * (nb * b * (S + G) + G * T)
        elems = (2 * scores
                 + BH * Dh * (2 * n * b + (n + S // b - 1) * b)           # q, out blocks; K (then V) blocks
                 + BH * G * T)                                             # global rows' probabilities
        mask_bytes = 0
    return {"flops": 4.0 * macs, "memory_bytes": float((io + elems) * bytes_per_element + mask_bytes)}
