"""Two differentiable collectives: all-gather and all-reduce (sum) with their backward passes.

``torch.distributed.nn.functional`` has both but is deprecated (it warns on every call in torch
2.13), so here they are in a few lines each:

* all-gather: forward stacks every rank's piece; backward sums the gradient each rank computed
  for every piece (an all-reduce) and keeps its own piece's share.
* all-reduce sum: ``y = sum_r x_r`` on every rank; backward ``dx_r = sum_r' dy_r'`` (another
  all-reduce sum), because every rank's ``y`` depends on every ``x_r``.

Both work on gloo (CPU) and NCCL (GPU).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather", "all_reduce_sum"]


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group, ctx.rank = group, dist.get_rank(group)
        pieces = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(pieces, x.contiguous(), group=group)
        return torch.stack(pieces)                                         # (P, *x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)       # (P, *x.shape)
        return grad[ctx.rank], None


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM, group=group)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_gather(x: Tensor, group=None) -> Tensor:
    """Every rank's ``x`` (same shape on every rank), stacked in rank order: (P, *x.shape)."""
    return _AllGather.apply(x, group)


def all_reduce_sum(x: Tensor, group=None) -> Tensor:
    """``sum_r x_r`` on every rank, differentiable."""
    return _AllReduceSum.apply(x, group)
