"""A local process group for notebooks and tests: ``run(fn, world_size, *args)``.

Starts ``world_size`` fresh Python processes (``torch.multiprocessing``, start method spawn),
joins them into a gloo process group on 127.0.0.1 at a free port, calls ``fn(*args)`` on each and
returns the results in rank order. Every collective is bounded by ``collective_timeout`` and the
whole run by ``timeout``, so a bug ends in an exception, never a hang. ``fn`` must be importable
(defined in a module, not in a notebook cell): spawned processes import it by name.

On GPUs or several machines use ``torchrun`` instead (see :mod:`tutor.distributed.demo`).
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from datetime import timedelta
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["free_port", "run"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, collective_timeout: float, threads: int,
            fn: Callable, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=collective_timeout))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
        return
    try:
        results.put((rank, True, fn(*args)))
    except BaseException:  # reported before the group closes, so the cause arrives before its echoes
        results.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def run(fn: Callable, world_size: int, *args: Any, timeout: float = 120.0, collective_timeout: float = 30.0,
        threads: int = 1) -> List[Any]:
    """``[fn(*args) on rank 0, ..., on rank P-1]``, each rank in its own process of one gloo group.

    Raises RuntimeError with the traceback of the rank that failed first, TimeoutError after ``timeout`` s.
    """
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = mp.start_processes(_worker, args=(world_size, free_port(), collective_timeout, threads, fn, args, results),
                               nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    out, errors = {}, {}                                       # errors in the order they arrived
    try:
        while len(out) + len(errors) < world_size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size}-process run of {fn.__name__} did not finish within {timeout} s")
            if results.empty():
                if all(not p.is_alive() for p in procs.processes) and results.empty():
                    raise RuntimeError(f"a process of {fn.__name__} died without reporting a result "
                                       f"(exit codes {[p.exitcode for p in procs.processes]})")
                time.sleep(0.02)
                continue
            rank, ok, value = results.get()
            (out if ok else errors)[rank] = value
    finally:
        for p in procs.processes:
            p.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
            if p.is_alive():
                p.kill()
                p.join()
    if errors:                                                 # the first failure is the cause, later ones
        rank = next(iter(errors))                              # are usually other ranks' timeouts
        raise RuntimeError(f"rank {rank} of {world_size} failed:\n{errors[rank]}")
    return [out[r] for r in range(world_size)]
