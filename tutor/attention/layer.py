"""``HybridSparseAttention``: a multi-head attention layer with local + global sparsity."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_window
from .sparse import IMPLS, sparse_attention


class HybridSparseAttention(nn.Module):
    """Multi-head self-attention where each token reads its window and the global tokens.

    x (B, T, dim) -> (B, T, dim). ``impl`` picks the implementation ("hybrid" by default; see
    :func:`tutor.attention.sparse_attention`). Dropout acts on the attention probabilities, in
    training only. Padded positions (``key_padding_mask`` True) come out as exact zeros.
    """

    def __init__(self, dim: int, num_heads: int, window: int, *, impl: str = "hybrid",
                 dropout: float = 0.0, bias: bool = True, causal: bool = False):
        super().__init__()
        for name, val in (("dim", dim), ("num_heads", num_heads)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if impl == "looped" and dropout > 0:
            raise ValueError("impl='looped' is forward-only and has no dropout; use dropout=0.0")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.window, self.impl, self.dropout, self.causal = check_window(window), impl, float(dropout), causal
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}, impl={self.impl!r}, "
                f"dropout={self.dropout}, causal={self.causal}")

    def forward(self, x: Tensor, global_mask: Tensor = None, key_padding_mask: Tensor = None,
                return_weights: bool = False):
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, T, dim), got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, T, dim={self.dim}), got {tuple(x.shape)}")
        weight = self.q_proj.weight
        if x.dtype != weight.dtype:
            raise TypeError(f"x must have the layer's dtype {weight.dtype}, got {x.dtype} with shape "
                            f"{tuple(x.shape)} (convert x or the layer with .to(dtype))")
        if x.device != weight.device:
            raise ValueError(f"x must be on the layer's device {weight.device}, got {x.device}")
        B, T, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        extra = {"dropout_p": self.dropout} if (self.training and self.dropout > 0) else {}
        res = sparse_attention(q, k, v, self.window, global_mask, key_padding_mask, causal=self.causal,
                               return_weights=return_weights, impl=self.impl, **extra)
        out, weights = res if return_weights else (res, None)
        y = self.out_proj(out.transpose(1, 2).reshape(B, T, self.dim))       # (B, T, dim)
        if key_padding_mask is not None:
            y = y.masked_fill(key_padding_mask[..., None], 0.0)
        return (y, weights) if return_weights else y
