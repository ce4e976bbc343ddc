"""Side-by-side timing: warm-up first, every call synchronized, repeats interleaved, the median."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Union

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer sees the whole call."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_side_by_side(fns: Dict[str, Callable], device="cpu", repeats: int = 5,
                      warmup: Union[int, Dict[str, int]] = 1):
    """Median wall ms of each ``fns[name]()``, repeats interleaved so load changes hit all alike.

    Each function first runs ``warmup`` untimed calls (an int for all, or ``{name: calls}``;
    compilation and one-off costs happen there); every timed call is synchronized on CUDA.
    Returns ``({name: ms}, {name: output of its last call})``::

        ms, _ = time_side_by_side({"dense": lambda: dense_attention(q, k, v, w),
                                   "sdpa": lambda: F.scaled_dot_product_attention(q, k, v)}, device)
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    warm = warmup if isinstance(warmup, dict) else {name: warmup for name in fns}
    for name, fn in fns.items():
        for _ in range(warm[name]):
            fn()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    outs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}, outs
