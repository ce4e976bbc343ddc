"""The one exchange before any data moves: every rank tells every other rank its shard.

Each rank checks its own arguments, then all ranks all-gather a small row of numbers (shard length,
B, H, Dh, window, flags, dtype, and whether the local checks passed). Every rank then holds the
same table and raises the same error if the shards do not fit together, so a mistake on one rank
is an exception on every rank, never a hang in a later collective.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .sharding import bounds_from_lengths

__all__ = ["Layout", "check_local", "exchange_layout"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
FIELDS = ("ok", "T_r", "B", "H", "Dh", "window", "causal", "dtype", "needs_grad", "G_r", "scale")


@dataclass(frozen=True)
class Layout:
    """What every rank knows after the exchange: rank, world size, shard bounds, largest G_r."""
    rank: int
    world_size: int
    bounds: Tuple[Tuple[int, int], ...]      # [(start_r, end_r)] for every rank
    max_globals: int                         # largest number of global tokens one rank holds

    @property
    def T(self) -> int:
        return self.bounds[-1][1]

    @property
    def start(self) -> int:
        return self.bounds[self.rank][0]

    @property
    def end(self) -> int:
        return self.bounds[self.rank][1]


def _check_mask(name: str, mask: Optional[Tensor], q: Tensor) -> None:
    if mask is None:
        return
    B, T_r = q.shape[0], q.shape[2]
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor of shape (B, T_r) = ({B}, {T_r}) or None, got {got}")
    if tuple(mask.shape) != (B, T_r):
        raise ValueError(f"{name} must have shape (B, T_r) = ({B}, {T_r}), got {tuple(mask.shape)}")
    if mask.device != q.device:
        raise ValueError(f"{name} must be on q's device {q.device}, got {mask.device}")


def check_local(q, k, v, window, global_mask, key_padding_mask, scale) -> int:
    """Check this rank's arguments (shapes of one shard); returns the window as an int."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, T_r, Dh), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, T_r, Dh), got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must share one shape (B, H, T_r, Dh), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise TypeError(f"q, k, v must share one dtype and device, got {q.dtype}/{q.device}, "
                        f"{k.dtype}/{k.device}, {v.dtype}/{v.device}")
    if q.shape[2] == 0 or q.shape[3] == 0:
        raise ValueError(f"every rank must hold T_r >= 1 positions and Dh >= 1, got q {tuple(q.shape)}")
    if isinstance(window, (bool, float)):
        raise TypeError(f"window must be a non-negative int, got {type(window).__name__} {window!r}")
    try:
        window = operator.index(window)
    except TypeError:
        raise TypeError(f"window must be a non-negative int, got {type(window).__name__} {window!r}") from None
    if window < 0:
        raise ValueError(f"window must be a non-negative int, got {window}")
    _check_mask("global_mask", global_mask, q)
    _check_mask("key_padding_mask", key_padding_mask, q)
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    return window


def _mismatch(table: List[List[float]], field: str) -> Optional[str]:
    col = FIELDS.index(field)
    values = [row[col] for row in table]
    if len(set(values)) == 1:
        return None
    shown = ", ".join(f"rank {r}: {int(x) if field != 'scale' else x}" for r, x in enumerate(values))
    return f"{field} must be the same on every rank, got {shown}"


def exchange_layout(q: Tensor, k: Tensor, v: Tensor, window, global_mask: Optional[Tensor],
                    key_padding_mask: Optional[Tensor], causal: bool, scale: Optional[float],
                    needs_grad: bool, count_globals, group=None) -> Tuple[Layout, int]:
    """Check locally, all-gather one row per rank, check across ranks; returns (layout, window).

    ``needs_grad``: which of q, k, v need a gradient, as the bits 4·q + 2·k + v.
    ``count_globals()`` gives this rank's largest number of global tokens in a sequence (called
    only when the local checks passed). Raises the same ValueError on every rank when the shards
    disagree (B, H, Dh, window, causal, dtype, scale, grad) and a ValueError naming the rank
    whose local arguments were wrong on every other rank.
    """
    error, row = None, [0.0] * len(FIELDS)
    try:
        window = check_local(q, k, v, window, global_mask, key_padding_mask, scale)
        B, H, T_r, Dh = q.shape
        row = [1, T_r, B, H, Dh, window, bool(causal), DTYPES.index(q.dtype), int(needs_grad),
               count_globals(), -1.0 if scale is None else float(scale)]
    except (TypeError, ValueError) as exc:
        error = exc
    device = q.device if isinstance(q, Tensor) else torch.device("cpu")
    mine = torch.tensor(row, dtype=torch.float64, device=device)          # (len(FIELDS),)
    world = dist.get_world_size(group)
    rows = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(rows, mine, group=group)
    table = [r.tolist() for r in rows]                                    # world x FIELDS
    if error is not None:
        raise error
    bad = [r for r, row in enumerate(table) if row[0] != 1]
    if bad:
        raise ValueError(f"sequence_parallel_attention: rank(s) {bad} got invalid arguments (see the error "
                         f"on those ranks); every rank stops here")
    for field in ("B", "H", "Dh", "window", "causal", "dtype", "scale", "needs_grad"):
        problem = _mismatch(table, field)
        if problem:
            raise ValueError(f"sequence_parallel_attention: {problem}. Every rank must hold a shard of the "
                             f"same batch (q, k, v (B, H, T_r, Dh) with equal B, H, Dh) and pass the same "
                             f"window, causal, scale and dtype.")
    rank = dist.get_rank(group)
    lengths = [int(row[FIELDS.index("T_r")]) for row in table]
    bounds = bounds_from_lengths(lengths)
    max_globals = max(int(row[FIELDS.index("G_r")]) for row in table)
    return Layout(rank, world, tuple(bounds), max_globals), window
