"""The sparsity pattern zoo: more mask mods in the :mod:`tutor.masks` style (notebook 05).

Each factory returns a predicate ``mod(batch, head, q_idx, kv_idx) -> bool tensor`` with a ``__name__``.
Predicates never branch on tensor values: rules are arithmetic on the indices or a look-up in a
table built once, in the factory, so they work on broadcast index grids
(:func:`tutor.masks.create_mask`) and under FlexAttention's ``vmap`` alike. Randomness comes from
a ``torch.Generator`` seeded by the caller: the same seed gives the same mask.

* :func:`generate_block_sparse`   - any block layout: ``layout[i // b, j // b]``.
* :func:`generate_block_diagonal` - each token reads its own block (Sparse Transformer, local).
* :func:`generate_strided`        - every ``stride``-th key (Sparse Transformer, strided head).
* :func:`generate_fixed_summary`  - the last ``summary`` keys of every block (Sparse Transformer, fixed).
* :func:`generate_bigbird_random` - each query block reads ``r`` random key blocks (BigBird).
* :func:`generate_lsh_buckets`    - tokens in the same hash bucket (Reformer's LSH attention).
* :func:`pattern_mask`            - the hybrid rule widened by block-diagonal and BigBird random
  blocks: what the pattern explorer of notebook 00 draws.

Compose them with :func:`tutor.masks.or_masks` / :func:`~tutor.masks.and_masks`, or hand one
to the hybrid rule as ``pattern=`` (``hybrid_mask``, ``dense_attention``, ``hybrid_attention``).
Count what a pattern allows, at any T, with :func:`tutor.costs.count_allowed` (``count_allowed(mod, T)``).
This module builds on the public names of :mod:`tutor.masks` and the validators of :mod:`tutor.arguments`
(its own floor) and nothing else of ours.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from .arguments import check_flag, check_int, check_window
from .masks import MaskMod, global_mask_at, hybrid_mask, name_mask, or_masks

__all__ = ["generate_block_sparse", "generate_block_diagonal", "generate_strided", "generate_fixed_summary",
           "bigbird_random_table", "layout_from_table", "generate_bigbird_random", "lsh_buckets",
           "generate_lsh_buckets", "pattern_mask"]


def _per_device(table: Tensor):
    """``lookup(device) -> table`` on that device, copied once per device and kept."""
    copies: Dict[torch.device, Tensor] = {table.device: table}

    def lookup(device: torch.device) -> Tensor:
        if device not in copies:
            copies[device] = table.to(device)
        return copies[device]
    return lookup


def generate_block_sparse(block_size: int, layout: Tensor) -> MaskMod:
    """Block layout: query ``i`` may read key ``j`` when ``layout[i // b, j // b]`` is True.

    ``layout``: (n_query_blocks, n_key_blocks) bool. The predicate covers positions
    ``< b * min(n_query_blocks, n_key_blocks)`` (recorded as ``mod.max_len``).
    """
    b = check_int("block_size", block_size, 1)
    if not isinstance(layout, Tensor) or layout.dtype != torch.bool or layout.dim() != 2:
        got = f"{layout.dtype} {tuple(layout.shape)}" if isinstance(layout, Tensor) else type(layout).__name__
        raise TypeError(f"layout must be a 2-D bool tensor (n_query_blocks, n_key_blocks), got {got}")
    table = _per_device(layout.clone())

    def block_sparse(batch, head, q_idx, kv_idx):
        return table(q_idx.device)[q_idx // b, kv_idx // b]
    mod = name_mask(block_sparse, f"block_sparse_b{b}")
    mod.max_len, mod.layout = b * min(layout.shape), layout.clone()
    return mod


def generate_block_diagonal(block_size: int) -> MaskMod:
    """Local blocks: ``i // b == j // b`` (non-overlapping windows of ``b`` tokens)."""
    b = check_int("block_size", block_size, 1)

    def block_diagonal(batch, head, q_idx, kv_idx):
        return q_idx // b == kv_idx // b
    return name_mask(block_diagonal, f"block_diag_b{b}")


def generate_strided(stride: int) -> MaskMod:
    """Sparse Transformer's strided head: ``(i - j) % stride == 0``, at any distance."""
    s = check_int("stride", stride, 1)

    def strided(batch, head, q_idx, kv_idx):
        return (q_idx - kv_idx) % s == 0
    return name_mask(strided, f"strided_s{s}")


def generate_fixed_summary(block_size: int, summary: int = 1) -> MaskMod:
    """Sparse Transformer's fixed head: everyone reads the last ``summary`` keys of each block."""
    b = check_int("block_size", block_size, 1)
    c = check_int("summary", summary, 1)
    if c > b:
        raise ValueError(f"summary must be <= block_size, got summary={c}, block_size={b}")

    def fixed_summary(batch, head, q_idx, kv_idx):
        return kv_idx % b >= b - c
    return name_mask(fixed_summary, f"fixed_b{b}_c{c}")


def bigbird_random_table(T: int, block_size: int, num_random_blocks: int, seed: int) -> Tensor:
    """BigBird's random blocks: (n_blocks, r) long, row ``n`` = the key blocks query block ``n`` reads.

    ``n_blocks = ceil(T / b)``. Each row holds ``r`` distinct blocks other than ``n`` itself (the
    window already covers it), in increasing order, drawn with ``torch.Generator().manual_seed(seed)``.
    """
    T = check_int("T", T, 1)
    b = check_int("block_size", block_size, 1)
    r = check_int("num_random_blocks", num_random_blocks, 0)
    nb = -(-T // b)
    if r > nb - 1:
        raise ValueError(f"num_random_blocks must be <= n_blocks - 1 = {nb - 1} (T={T}, block_size={b}), got {r}")
    g = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(nb, nb, generator=g)                                 # (nb, nb) random sort keys
    keys.fill_diagonal_(2.0)                                               # own block sorts last
    return keys.argsort(dim=1)[:, :r].sort(dim=1).values                   # (nb, r)


def layout_from_table(table: Tensor, n_key_blocks: int) -> Tensor:
    """Block table (n_query_blocks, r) long -> layout (n_query_blocks, n_key_blocks) bool."""
    if not isinstance(table, Tensor) or table.dim() != 2 or table.dtype != torch.long:
        got = f"{table.dtype} {tuple(table.shape)}" if isinstance(table, Tensor) else type(table).__name__
        raise TypeError(f"table must be a 2-D long tensor (n_query_blocks, r), got {got}")
    layout = torch.zeros(table.shape[0], n_key_blocks, dtype=torch.bool, device=table.device)
    layout[torch.arange(table.shape[0], device=table.device)[:, None], table] = True
    return layout                                                          # (nq, nk)


def generate_bigbird_random(T: int, block_size: int, num_random_blocks: int, seed: int) -> MaskMod:
    """BigBird's random attention: query block ``i // b`` reads the key blocks of its table row.

    The table is :func:`bigbird_random_table` (kept as ``mod.table``). OR it with a window and
    global tokens (``hybrid_mask(..., pattern=mod)``) for the full BigBird pattern.
    """
    table = bigbird_random_table(T, block_size, num_random_blocks, seed)   # (nb, r)
    mod = generate_block_sparse(block_size, layout_from_table(table, table.shape[0]))
    mod.__name__ = f"bigbird_random_r{num_random_blocks}_b{block_size}"
    mod.table = table
    return mod


def lsh_buckets(x: Tensor, n_buckets: int, seed: int) -> Tensor:
    """Angular LSH (Reformer): bucket ids (B, T) long of vectors x (B, T, D).

    One random rotation ``R`` (D, n_buckets / 2) from the seed; ``bucket = argmax([xR, -xR])``.
    Vectors pointing the same way land in the same bucket with high probability.
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a float tensor of shape (B, T, D), got {got}")
    n = check_int("n_buckets", n_buckets, 2)
    if n % 2:
        raise ValueError(f"n_buckets must be even (buckets come in +/- pairs), got {n}")
    g = torch.Generator().manual_seed(int(seed))
    R = torch.randn(x.shape[-1], n // 2, generator=g, dtype=torch.float64)  # (D, n/2)
    proj = x.detach().double() @ R.to(x.device)                            # (B, T, n/2)
    return torch.cat([proj, -proj], dim=-1).argmax(dim=-1)                 # (B, T)


def generate_lsh_buckets(x: Tensor, n_buckets: int, seed: int) -> MaskMod:
    """Reformer-style attention: ``i`` may read ``j`` when both hash to the same bucket.

    ``x``: (B, T, D), the shared query/key vectors. Buckets are :func:`lsh_buckets` (kept as
    ``mod.buckets``); the predicate is per sequence (``mod.batch_size = B``, ``mod.max_len = T``).
    """
    buckets = lsh_buckets(x, n_buckets, seed)                              # (B, T)
    table = _per_device(buckets)

    def lsh(batch, head, q_idx, kv_idx):
        bk = table(q_idx.device)
        return bk[batch, q_idx] == bk[batch, kv_idx]
    mod = name_mask(lsh, f"lsh_{n_buckets}buckets")
    mod.batch_size, mod.max_len, mod.buckets = buckets.shape[0], buckets.shape[1], buckets
    return mod


def pattern_mask(T: int, window: int, global_positions: Sequence[int] = (), *, causal: bool = False,
                 dilation: int = 1, block_size: int = 4, block_diagonal: bool = False, random_blocks: int = 0,
                 seed: int = 0) -> Tensor:
    """The hybrid rule of one sequence, its window dilated and widened by the block patterns: (T, T) bool.

    ``hybrid_mask(T, window, global_mask_at(T, global_positions), causal=causal, dilation=dilation,
    pattern=...)[0]`` where the pattern ORs :func:`generate_block_diagonal` (``block_diagonal``) and
    BigBird's :func:`generate_bigbird_random` (``random_blocks`` key blocks per query block of
    ``block_size``, drawn with ``seed``). With both off this is the plain hybrid mask.
    """
    T, b = check_int("T", T, 1), check_int("block_size", block_size, 1)
    window, block_diagonal = check_window(window), check_flag("block_diagonal", block_diagonal)
    random_blocks = check_int("random_blocks", random_blocks, 0)
    mods = [generate_block_diagonal(b)] if block_diagonal else []
    if random_blocks:
        mods.append(generate_bigbird_random(T, b, random_blocks, seed))
    pattern: Optional[MaskMod] = or_masks(*mods) if mods else None
    gm = global_mask_at(T, global_positions) if len(global_positions) else None
    return hybrid_mask(T, window, gm, causal=causal, dilation=dilation, pattern=pattern)[0]  # (T, T)
