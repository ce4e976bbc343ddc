"""Side-by-side timing: warm-up first, every call synchronized, repeats interleaved, the median."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer sees the whole call."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_side_by_side(fns: Dict[str, Callable], device: str, repeats: int, warmup: Dict[str, int]):
    """Median wall ms of each ``fns[name]()``, repeats interleaved so load changes hit all alike.

    Each function first runs ``warmup[name]`` untimed calls (compilation happens there); every
    timed call is synchronized. Returns ``({name: ms}, {name: output of its last call})``.
    """
    for name, fn in fns.items():
        for _ in range(warmup[name]):
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
