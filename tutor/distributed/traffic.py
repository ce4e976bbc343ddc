"""Counting the bytes a rank sends, and what other ways of sharing a sequence would send.

:func:`count_traffic` is a context manager: inside it, the exchanges of :mod:`tutor.distributed`
add the bytes this rank sends (forward and backward) to a dict ``{kind: bytes}``. Collectives are
counted as a ring implementation sends them: an all-gather sends this rank's piece to each of the
other ``P - 1`` ranks, an all-reduce of ``n`` bytes sends ``2 (P - 1) / P · n``.

The formulas beside it give the same numbers without running anything (rows of K and V); the rows a
halo exchange sends are :func:`tutor.distributed.halo.halo_rows`, beside the plan they count.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

__all__ = ["count_traffic", "record", "record_all_gather", "record_all_reduce",
           "all_gather_rows", "ring_rows", "layer_bytes"]

_counter: Optional[Dict[str, int]] = None


@contextlib.contextmanager
def count_traffic() -> Iterator[Dict[str, int]]:
    """``with count_traffic() as sent: ...`` then ``sent == {"halo": bytes, "globals": ..., "merge": ...}``."""
    global _counter
    outer, _counter = _counter, {}
    try:
        yield _counter
    finally:
        _counter = outer


def record(kind: str, nbytes: int) -> None:
    """Add ``nbytes`` sent by this rank under ``kind`` (no-op outside :func:`count_traffic`)."""
    if _counter is not None:
        _counter[kind] = _counter.get(kind, 0) + int(nbytes)


def record_all_gather(kind: str, piece_bytes: int, world_size: int) -> None:
    record(kind, piece_bytes * (world_size - 1))


def record_all_reduce(kind: str, nbytes: int, world_size: int) -> None:
    record(kind, 2 * (world_size - 1) * nbytes // world_size)


def all_gather_rows(T: int, world_size: int) -> int:
    """Rows one rank sends when K and V are all-gathered (context parallelism): its shard, P - 1 times."""
    return (world_size - 1) * -(-T // world_size)


def ring_rows(T: int, world_size: int) -> int:
    """Rows one rank sends in ring attention: P - 1 steps, each passing one shard to the next rank."""
    return all_gather_rows(T, world_size)


def layer_bytes(rows: int, B: int, H: int, Dh: int, bytes_per_value: int = 4) -> int:
    """Bytes of ``rows`` rows of K and V together: 2 · rows · B · H · Dh values."""
    return 2 * rows * B * H * Dh * bytes_per_value
