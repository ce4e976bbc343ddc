"""Notebook 06's :class:`tutor.training.TinyEncoder`, run on a sequence sharded over ranks.

Everything in the encoder but attention acts on one token at a time (embeddings, layer norms,
MLPs), so a shard goes through them alone; attention becomes :class:`.SequenceParallelAttention`.
The classifier reads position 0, which rank 0 holds: rank 0 computes the loss, the other ranks
contribute through the attention's collectives, and :func:`.all_reduce_grads` sums the parameter
gradients. The result equals one process's loss and gradients.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..training import TinyEncoder
from .layer import SequenceParallelAttention, all_reduce_grads

__all__ = ["sharded_encoder_loss", "sharded_training_step"]


def sharded_encoder_loss(model: TinyEncoder, tokens: Tensor, labels: Tensor, start: int,
                         global_mask: Optional[Tensor] = None, group=None) -> Tensor:
    """Cross-entropy of ``model`` on the whole sequence, from this rank's shard tokens (B, T_r).

    ``start``: position of this shard's first token. Returns the loss on the rank that holds
    position 0 and a zero that still depends on the shard elsewhere (every rank runs backward).
    """
    T_r = tokens.shape[1]
    pos = start + torch.arange(T_r, device=tokens.device)                        # (T_r,)
    x = model.tok_emb(tokens) + model.pos_emb(pos)                               # (B, T_r, D)
    for block in model.blocks:
        x = x + SequenceParallelAttention(block.attn, group)(block.norm1(x), global_mask)   # (B, T_r, D)
        x = x + block.mlp(block.norm2(x))                                        # (B, T_r, D)
    if start == 0:
        return F.cross_entropy(model.head(model.norm(x[:, 0])), labels)         # logits (B, C)
    return x.sum() * 0.0


def sharded_training_step(model: TinyEncoder, tokens: Tensor, labels: Tensor, start: int,
                          global_mask: Optional[Tensor] = None, group=None) -> float:
    """Forward + backward on the shard, gradients summed over ranks; returns the (broadcast) loss."""
    model.zero_grad(set_to_none=True)
    loss = sharded_encoder_loss(model, tokens, labels, start, global_mask, group)
    loss.backward()
    all_reduce_grads(model, group)
    total = loss.detach().reshape(1).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)                   # only rank 0's is non-zero
    return float(total)
