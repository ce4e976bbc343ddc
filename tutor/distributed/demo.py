"""Sequence parallelism, live: ``torchrun --nproc-per-node P -m tutor.distributed.demo``.

1. **equality**: at a small T every rank compares its shard of the output and of the gradients
   with ``hybrid_attention`` on the whole sequence, computed by itself.
2. **scale**: at a long T each rank runs forward + backward on its shard and reports its shard
   length, peak memory, time and the bytes it sent per layer (halo, globals, merge), next to what
   an all-gather context-parallel layer sends; rank 0 then runs the whole sequence alone for the
   peak memory and time of one process.
3. **training**: one training step of notebook 06's ``TinyEncoder`` on a sharded batch gives one
   process's loss and (all-reduced) parameter gradients.

gloo on CPU, NCCL when CUDA is available (one GPU per rank). Several machines:
``torchrun --nnodes N --nproc-per-node P --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m tutor.distributed.demo``.
:func:`equality_check` and :func:`memory_check` also run from a notebook through :func:`tutor.distributed.launch.run`.
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

from ..attention import hybrid_attention
from ..bench import peak_mem_here
from ..training import MarkerTask, TinyEncoder, make_batch
from .attention import sequence_parallel_attention
from .encoder import sharded_training_step
from .sharding import shard_bounds, shard_sequence
from .traffic import all_gather_rows, count_traffic, layer_bytes, ring_rows

__all__ = ["make_problem", "equality_check", "memory_check", "single_process_check", "training_check", "live_check",
           "main"]


def make_problem(T: int, G: int, B: int = 1, H: int = 2, Dh: int = 32, seed: int = 0, device: str = "cpu"):
    """Seeded q, k, v (B, H, T, Dh) and a global mask with G tokens spread over the sequence (B, T)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g).to(device) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool, device=device)
    if G > 0:
        gm[:, torch.linspace(0, T - 1, G).long()] = True
    return q, k, v, gm


def _device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"


def equality_check(T: int = 301, window: int = 16, G: int = 3, causal: bool = False) -> Dict[str, float]:
    """This rank's max |difference| with one process: output and dq, dk, dv (float32)."""
    rank, P, device = dist.get_rank(), dist.get_world_size(), _device()
    q, k, v, gm = make_problem(T, G, B=2, H=2, Dh=16, device=device)
    kpm = torch.zeros_like(gm)
    kpm[1, T - T // 5:] = True                                                  # sequence 1 ends in padding
    full = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = hybrid_attention(*full, window, gm, kpm, causal=causal)
    ref.square().sum().backward()
    mine = [shard_sequence(t, rank, P, 2).clone().requires_grad_() for t in (q, k, v)]
    out = sequence_parallel_attention(*mine, window, shard_sequence(gm, rank, P, 1),
                                      shard_sequence(kpm, rank, P, 1), causal=causal)
    out.square().sum().backward()
    errs = {"out": (out - shard_sequence(ref, rank, P, 2)).abs().max()}
    for name, a, b in zip(("dq", "dk", "dv"), mine, full):
        errs[name] = (a.grad - shard_sequence(b.grad, rank, P, 2)).abs().max()
    return {name: float(e.detach()) for name, e in errs.items()}


def _fwd_bwd(fn, inputs):
    def step():
        xs = [t.clone().requires_grad_() for t in inputs]
        fn(*xs).square().sum().backward()
    return step


def memory_check(T: int = 65536, window: int = 64, G: int = 4, B: int = 1, H: int = 2, Dh: int = 32,
                 repeats: int = 1) -> Dict[str, float]:
    """Forward + backward of this rank's shard: shard length, peak MB, ms and bytes sent (fwd, fwd+bwd)."""
    rank, P, device = dist.get_rank(), dist.get_world_size(), _device()
    q, k, v, gm = (shard_sequence(t, rank, P, 2 if t.dim() == 4 else 1).contiguous()
                   for t in make_problem(T, G, B, H, Dh, device=device))
    step = _fwd_bwd(lambda a, b, c: sequence_parallel_attention(a, b, c, window, gm), (q, k, v))
    peak = peak_mem_here(step, device, warmup=1)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    ms = (time.perf_counter() - t0) / repeats * 1e3
    with count_traffic() as fwd:
        with torch.no_grad():
            sequence_parallel_attention(q, k, v, window, gm)
    with count_traffic() as both:
        step()
    start, end = shard_bounds(T, P)[rank]
    return {"rank": rank, "T_r": end - start, "peak_mb": peak, "ms": ms, "halo_bytes": fwd.get("halo", 0),
            "global_bytes": fwd.get("globals", 0) + fwd.get("merge", 0), "sent_bytes": sum(fwd.values()),
            "sent_fwd_bwd_bytes": sum(both.values()),
            "all_gather_bytes": layer_bytes(all_gather_rows(T, P), B, H, Dh, q.element_size()),
            "ring_bytes": layer_bytes(ring_rows(T, P), B, H, Dh, q.element_size())}


def single_process_check(T: int = 65536, window: int = 64, G: int = 4, B: int = 1, H: int = 2, Dh: int = 32,
                         device: str = "cpu") -> Dict[str, float]:
    """The whole sequence in this one process: peak MB and ms of forward + backward."""
    q, k, v, gm = make_problem(T, G, B, H, Dh, device=device)
    step = _fwd_bwd(lambda a, b, c: hybrid_attention(a, b, c, window, gm), (q, k, v))
    peak = peak_mem_here(step, device, warmup=1)
    t0 = time.perf_counter()
    step()
    return {"peak_mb": peak, "ms": (time.perf_counter() - t0) * 1e3}


def training_check(T: int = 96, window: int = 4, seed: int = 0) -> Dict[str, float]:
    """One sharded training step of TinyEncoder vs one process: |loss difference|, max |grad difference|."""
    rank, P, device = dist.get_rank(), dist.get_world_size(), _device()
    task = MarkerTask(seq_len=T, min_distance=T // 2)
    tokens, labels, _ = make_batch(task, 4, torch.Generator().manual_seed(seed))
    tokens, labels = tokens.to(device), labels.to(device)
    torch.manual_seed(seed)
    model = TinyEncoder(task.vocab_size, task.num_classes, T, window=window, global_positions=(0,)).to(device)
    loss = torch.nn.functional.cross_entropy(model(tokens), labels)
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    gm = model.default_global_mask(tokens)
    start, _ = shard_bounds(T, P)[rank]
    got = sharded_training_step(model, shard_sequence(tokens, rank, P, 1), labels, start,
                                shard_sequence(gm, rank, P, 1))
    grad_err = max(float((p.grad - want[n]).abs().max()) for n, p in model.named_parameters())
    return {"loss": got, "loss_err": abs(got - float(loss.detach())), "grad_err": grad_err}


def live_check(check_T: int = 301, window: int = 16, G: int = 3, T: int = 8192, memory_window: int = 64) -> Dict:
    """What notebook 08 runs in its two processes: :func:`equality_check`, then :func:`memory_check`."""
    return {"equality": equality_check(check_T, window, G), "memory": memory_check(T, memory_window, G)}


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3f} MB"


def report(opts) -> List[str]:
    """Run the three checks on this group; rank 0 gets the printed lines."""
    rank, P = dist.get_rank(), dist.get_world_size()
    lines = [f"world size P={P}, backend {dist.get_backend()}, device {_device()}"]
    eq = [None] * P
    dist.all_gather_object(eq, equality_check(opts.check_T, min(opts.window, opts.check_T // 3), opts.globals))
    worst = {k: max(e[k] for e in eq) for k in eq[0]}
    lines.append(f"1. equality at T={opts.check_T}: max |out - one process| = {worst['out']:.1e}, "
                 f"max |grad - one process| = {max(worst['dq'], worst['dk'], worst['dv']):.1e} (float32)")
    mem = [None] * P
    dist.all_gather_object(mem, memory_check(opts.T, opts.window, opts.globals, opts.batch, opts.heads,
                                             opts.head_dim, opts.repeats))
    one = single_process_check(opts.T, opts.window, opts.globals, opts.batch, opts.heads, opts.head_dim,
                               _device()) if rank == 0 and not opts.skip_single else None
    dist.barrier()
    lines.append(f"2. T={opts.T}, w={opts.window}, G={opts.globals}, B={opts.batch}, H={opts.heads}, "
                 f"Dh={opts.head_dim}, float32, forward + backward")
    lines.append("   rank  T_r     peak MB   ms      sent/layer (halo + globals)   all-gather CP   ratio")
    for m in mem:
        lines.append(f"   {m['rank']:<5} {m['T_r']:<7} {m['peak_mb']:<9.1f} {m['ms']:<7.0f} "
                     f"{_mb(m['sent_bytes'])} ({_mb(m['halo_bytes'])} + {_mb(m['global_bytes'])})"
                     f"   {_mb(m['all_gather_bytes'])}   {m['all_gather_bytes'] / m['sent_bytes']:.0f}x")
    worst_sent = max(m["sent_bytes"] for m in mem)
    lines.append(f"   most bytes one rank sends per layer: {worst_sent} (forward; {max(m['sent_fwd_bwd_bytes'] for m in mem)}"
                 f" forward + backward); all-gather context parallelism: {mem[0]['all_gather_bytes']}; ring attention: "
                 f"{mem[0]['ring_bytes']} -> {mem[0]['all_gather_bytes'] / worst_sent:.0f}x less than all-gather")
    if one is not None:
        worst_peak = max(m["peak_mb"] for m in mem)
        lines.append(f"   one process, whole T: peak {one['peak_mb']:.1f} MB, {one['ms']:.0f} ms -> "
                     f"largest rank peak / one process = {worst_peak / one['peak_mb']:.2f}")
    tr = [None] * P
    dist.all_gather_object(tr, training_check())
    lines.append(f"3. TinyEncoder training step: loss {tr[0]['loss']:.6f}, |loss - one process| = "
                 f"{max(t['loss_err'] for t in tr):.1e}, max |param grad - one process| = "
                 f"{max(t['grad_err'] for t in tr):.1e}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node P -m tutor.distributed.demo",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--T", type=int, default=65536, help="sequence length of the scale run")
    p.add_argument("--check-T", type=int, default=301, help="sequence length of the equality check")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--globals", type=int, default=4, help="global tokens G, spread over the sequence")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--skip-single", action="store_true", help="do not run the whole T in one process")
    p.add_argument("--timeout", type=float, default=600, help="seconds any collective may take")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    if "RANK" not in os.environ:
        raise SystemExit("run me with torchrun: torchrun --nproc-per-node 4 -m tutor.distributed.demo")
    torch.set_num_threads(opts.threads)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=opts.timeout))
    try:
        lines = report(opts)
        if dist.get_rank() == 0:
            print("\n".join(lines), flush=True)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
