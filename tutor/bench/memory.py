"""Peak extra memory of one call: the CUDA allocator's counters, or the RSS of a fresh CPU child;
and what autograd saves for the backward pass (:func:`saved_tensors`).

On CPU each (impl, T) runs in a fresh child process (``python -m tutor.bench --child JSON``, the run as JSON), so
nothing allocated by earlier runs hides the peak. Linux resets the high-water mark after warm-up via
``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` is used, warm-up included.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from typing import Callable, Dict, Tuple

import torch

from .runs import Setting, make_inputs, runner


def saved_tensors(fn: Callable, *inputs: torch.Tensor) -> Dict[int, Tuple[torch.dtype, int]]:
    """What autograd saves for the backward pass while ``fn(*inputs)`` runs: {storage: (dtype, bytes)}.

    Watched with ``torch.autograd.graph.saved_tensors_hooks``. Each storage counts once (views
    share their base's), and the storages of ``inputs`` are left out: the caller holds them anyway.
    """
    skip = {x.untyped_storage().data_ptr() for x in inputs}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = (t.dtype, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return seen


def saved_bytes(fn: Callable, *inputs: torch.Tensor) -> int:
    """Bytes autograd saves while ``fn(*inputs)`` runs, inputs excluded (see :func:`saved_tensors`)."""
    return sum(nbytes for _, nbytes in saved_tensors(fn, *inputs).values())


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _release_free_memory() -> None:
    """Hand memory freed by earlier calls back to the OS (glibc), so it cannot hide a peak."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):                                     # not glibc: nothing to do
        pass


def peak_mem_here(fn: Callable, device: str, warmup: int) -> float:
    """Extra MB one call of ``fn`` needs, measured in this process (CUDA, or a CPU child)."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    _release_free_memory()                                                # so the call must fault in its pages
    try:                                                                  # Linux: reset the high-water mark
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _rss_kb("VmRSS")
        fn()
        return max(0, _rss_kb("VmHWM") - base) / 1024                    # RSS may dip below base
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def peak_mem_child(impl: str, s: Setting, threads: int, timeout: float = 900, mode: str = "forward") -> float:
    """Run ``impl`` once in a fresh Python (same seed) and return its peak extra MB (NaN on failure).

    ``mode="train"``: one forward + backward step (:func:`.train.train_runners`) instead of a forward.
    """
    spec = json.dumps({"impl": impl, "setting": s.__dict__, "threads": threads, "mode": mode})
    try:
        res = subprocess.run([sys.executable, "-m", "tutor.bench", "--child", spec], capture_output=True,
                             text=True, timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})
        return float(res.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return math.nan


def child_main(spec: str) -> int:
    """The child side of :func:`peak_mem_child`: print the peak extra MB of one call."""
    d = json.loads(spec)
    torch.set_num_threads(d["threads"])
    s = Setting(**d["setting"])
    q, k, v, gm = make_inputs(s)
    if d.get("mode", "forward") == "train":
        from .train import train_runners
        _, step = train_runners(d["impl"], s, q, k, v, gm)
        print(peak_mem_here(step, s.device, warmup=1))
        return 0
    warmup = 2 if "flex" in d["impl"] or d["impl"] == "hybrid:auto" else 1
    with torch.no_grad():
        print(peak_mem_here(runner(d["impl"], s, q, k, v, gm), s.device, warmup=warmup))
    return 0
