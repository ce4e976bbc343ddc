"""The one exchange before any data moves: every rank tells every other rank its shard.

Each rank checks its own arguments, then all ranks all-gather a small row of numbers (shard length,
B, H, Dh, window, flags, dtype, and whether the local checks passed). Every rank then holds the
same table and raises the same error if the shards do not fit together, so a mistake on one rank
is an exception on every rank, never a hang in a later collective.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..arguments import FLOAT_DTYPES, check_bool_mask, check_flag, check_qkv, check_scale, check_window
from .sharding import bounds_from_lengths

__all__ = ["Layout", "check_local", "exchange_layout"]

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


def check_local(q, k, v, window, global_mask, key_padding_mask, causal, scale) -> Tuple[int, bool, float]:
    """Check this rank's arguments (shapes of one shard) with the validators every entry point uses.

    Returns ``(window, causal, scale)``: the window as an int, causal as a bool and the scale
    resolved (``1 / sqrt(Dh)`` for None; zero and negative allowed, as in ``hybrid_attention``).
    """
    check_qkv(q, k, v)
    B, _, T_r, Dh = q.shape
    window = check_window(window)
    check_bool_mask("global_mask", global_mask, B, T_r, q.device)
    check_bool_mask("key_padding_mask", key_padding_mask, B, T_r, q.device)
    causal = check_flag("causal", causal)
    scale = check_scale(scale)
    return window, causal, 1.0 / math.sqrt(Dh) if scale is None else scale


def _mismatch(table: List[List[float]], field: str) -> Optional[str]:
    col = FIELDS.index(field)
    values = [row[col] for row in table]
    if len(set(values)) == 1:
        return None
    shown = ", ".join(f"rank {r}: {int(x) if field != 'scale' else x}" for r, x in enumerate(values))
    return f"{field} must be the same on every rank, got {shown}"


def exchange_layout(q: Tensor, k: Tensor, v: Tensor, window, global_mask: Optional[Tensor],
                    key_padding_mask: Optional[Tensor], causal: bool, scale: Optional[float],
                    needs_grad: bool, count_globals, group=None) -> Tuple[Layout, int, bool, float]:
    """Check locally, all-gather one row per rank, check across ranks; returns
    ``(layout, window, causal, scale)`` with the scale resolved (see :func:`check_local`).

    ``needs_grad``: which of q, k, v need a gradient, as the bits 4·q + 2·k + v.
    ``count_globals()`` gives this rank's largest number of global tokens in a sequence (called
    only when the local checks passed). Raises the same ValueError on every rank when the shards
    disagree (B, H, Dh, window, causal, dtype, scale, grad) and a ValueError naming the rank
    whose local arguments were wrong on every other rank.
    """
    error, row = None, [0.0] * len(FIELDS)
    try:
        window, causal, scale = check_local(q, k, v, window, global_mask, key_padding_mask, causal, scale)
        B, H, T_r, Dh = q.shape
        row = [1, T_r, B, H, Dh, window, causal, FLOAT_DTYPES.index(q.dtype), int(needs_grad), count_globals(), scale]
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
    return Layout(rank, world, tuple(bounds), max_globals), window, causal, scale
