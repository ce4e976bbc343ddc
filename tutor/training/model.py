"""A tiny Transformer encoder on sparse attention: pre-norm blocks, a classifier read out at position 0."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..attention import HybridSparseAttention


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + MLP(LN(x)). x (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim: int, num_heads: int, window: int, impl: str, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HybridSparseAttention(dim, num_heads, window, impl=impl)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, global_mask: Optional[Tensor] = None, return_weights: bool = False):
        """x (B, T, dim) -> (B, T, dim) [, attention weights (B, H, T, T)]."""
        out = self.attn(self.norm1(x), global_mask, return_weights=return_weights)
        a, weights = out if return_weights else (out, None)
        x = x + a                                                                  # (B, T, dim)
        x = x + self.mlp(self.norm2(x))                                            # (B, T, dim)
        return (x, weights) if return_weights else x


class TinyEncoder(nn.Module):
    """Embeddings, ``n_layers`` blocks of sparse attention, a linear classifier on position 0.

    ``global_positions``: positions made global in every sequence (``(0,)`` = the [CLS] token).
    ``forward(tokens (B, T), global_mask=None) -> logits (B, num_classes)``; an explicit
    ``global_mask`` (B, T) bool replaces the one built from ``global_positions``. With
    ``return_weights=True`` it also returns a list of each layer's (B, H, T, T) attention weights.
    """

    def __init__(self, vocab_size: int, num_classes: int, max_len: int, *, dim: int = 32,
                 num_heads: int = 2, n_layers: int = 2, window: int = 4, impl: str = "hybrid",
                 global_positions: Sequence[int] = ()):
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        if any(not 0 <= p < max_len for p in global_positions):
            raise ValueError(f"global_positions must lie in [0, max_len={max_len}), got {tuple(global_positions)}")
        self.max_len, self.global_positions = max_len, tuple(int(p) for p in global_positions)
        self.tok_emb, self.pos_emb = nn.Embedding(vocab_size, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, num_heads, window, impl) for _ in range(n_layers))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def default_global_mask(self, tokens: Tensor) -> Optional[Tensor]:
        """(B, T) bool with ``global_positions`` set, or None when there are none."""
        if not self.global_positions:
            return None
        mask = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)   # (B, T)
        mask[:, list(self.global_positions)] = True
        return mask

    def forward(self, tokens: Tensor, global_mask: Optional[Tensor] = None, return_weights: bool = False):
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a (B, T) long tensor, got {got}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens has T={tokens.shape[1]} > max_len={self.max_len}")
        if global_mask is None:
            global_mask = self.default_global_mask(tokens)
        pos = torch.arange(tokens.shape[1], device=tokens.device)                  # (T,)
        x = self.tok_emb(tokens) + self.pos_emb(pos)                               # (B, T, dim)
        maps = []
        for block in self.blocks:
            x = block(x, global_mask, return_weights)                              # (B, T, dim)
            if return_weights:
                x, weights = x
                maps.append(weights)                                               # (B, H, T, T)
        logits = self.head(self.norm(x[:, 0]))                                     # (B, C)
        return (logits, maps) if return_weights else logits
