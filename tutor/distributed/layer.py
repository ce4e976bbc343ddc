"""The layer form: a :class:`tutor.attention.HybridSparseAttention` run on a sequence shard.

``SequenceParallelAttention(layer, group)`` shares ``layer``'s projections (no copy): x_shard
(B, T_r, dim) -> y_shard (B, T_r, dim), this rank's rows of ``layer(x)`` on the whole sequence.
Each rank's parameter gradients cover its own tokens only; :func:`all_reduce_grads` sums them
so every rank holds the gradient of the whole sequence (what data parallelism does for a batch).
"""
from __future__ import annotations

from typing import Optional

import torch.distributed as dist
from torch import Tensor, nn

from ..attention import HybridSparseAttention
from .attention import sequence_parallel_attention

__all__ = ["SequenceParallelAttention", "all_reduce_grads"]


class SequenceParallelAttention(nn.Module):
    """``layer`` (a HybridSparseAttention) applied to this rank's shard of the sequence."""

    def __init__(self, layer: HybridSparseAttention, group=None):
        super().__init__()
        if not isinstance(layer, HybridSparseAttention):
            raise TypeError(f"layer must be a tutor.attention.HybridSparseAttention, got {type(layer).__name__}")
        self.layer, self.group = layer, group

    def forward(self, x: Tensor, global_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """x (B, T_r, dim), masks (B, T_r) -> (B, T_r, dim); padded rows are exact zeros."""
        layer = self.layer
        if layer.training and layer.dropout > 0:
            raise ValueError(f"SequenceParallelAttention cannot apply dropout={layer.dropout} (its random "
                             f"pattern would differ from one process); use layer.eval() or dropout=0.0")
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != layer.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, T_r, dim={layer.dim}), got {got}")
        B, T_r, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T_r, layer.num_heads, layer.head_dim).transpose(1, 2)  # (B, H, T_r, Dh)

        q, k, v = heads(layer.q_proj(x)), heads(layer.k_proj(x)), heads(layer.v_proj(x))
        out = sequence_parallel_attention(q, k, v, layer.window, global_mask, key_padding_mask,
                                          causal=layer.causal, group=self.group)    # (B, H, T_r, Dh)
        y = layer.out_proj(out.transpose(1, 2).reshape(B, T_r, layer.dim))            # (B, T_r, dim)
        if key_padding_mask is not None:
            y = y.masked_fill(key_padding_mask[..., None], 0.0)
        return y


def all_reduce_grads(module: nn.Module, group=None) -> None:
    """Sum every parameter's ``.grad`` over the ranks (in place); a missing grad counts as zero."""
    for p in module.parameters():
        if p.grad is None:
            p.grad = p.detach().new_zeros(p.shape)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
