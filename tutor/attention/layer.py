"""``HybridSparseAttention``: a multi-head attention layer with local + global sparsity.

With ``global_projections=True`` the global rows get their own query, key and value projections
(``q_global``, ``k_global``, ``v_global``), as in Longformer: a global token reads every key
through them, while the local rows (which also read the global keys) use ``q_proj`` / ``k_proj`` /
``v_proj``. :meth:`HybridSparseAttention.from_longformer` builds one from transformers'
``LongformerSelfAttention`` with its weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..arguments import check_flag, check_int, check_probability, check_window
from .global_rows import global_rows
from .global_tokens import global_slots, scatter_rows
from .hybrid import BACKENDS
from .softmax import accum_dtype
from .sparse import IMPLS, sparse_attention


class HybridSparseAttention(nn.Module):
    """Multi-head self-attention where each token reads its window and the global tokens.

    x (B, T, dim) -> (B, T, dim). ``impl`` picks the implementation ("hybrid" by default; see
    :func:`tutor.attention.sparse_attention`) and ``backend`` the hybrid backend ("auto" by default).
    Dropout acts on the attention probabilities, in training only. Padded positions
    (``key_padding_mask`` True) come out as exact zeros. ``global_projections=True`` adds
    Longformer's separate projections for the global rows (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int, window: int, *, impl: str = "hybrid",
                 dropout: float = 0.0, bias: bool = True, causal: bool = False,
                 global_projections: bool = False, backend: str = "auto"):
        super().__init__()
        dim, num_heads = check_int("dim", dim, 1), check_int("num_heads", num_heads, 1)
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        if not isinstance(impl, str) or impl not in IMPLS:
            raise ValueError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
        dropout = check_probability("dropout", dropout)
        bias, causal = check_flag("bias", bias), check_flag("causal", causal)
        global_projections = check_flag("global_projections", global_projections)
        if impl == "looped" and dropout > 0:
            raise ValueError("impl='looped' is forward-only and has no dropout; use dropout=0.0")
        if not isinstance(backend, str) or (backend != "auto" and backend not in BACKENDS):
            raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
        if backend != "auto" and impl != "hybrid":
            raise ValueError(f"backend={backend!r} needs impl='hybrid', got impl={impl!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.window, self.impl, self.dropout, self.causal = check_window(window), impl, dropout, causal
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.q_global = self.k_global = self.v_global = None
        if global_projections:
            self.q_global = nn.Linear(dim, dim, bias=bias)
            self.k_global = nn.Linear(dim, dim, bias=bias)
            self.v_global = nn.Linear(dim, dim, bias=bias)

    @property
    def global_projections(self) -> bool:
        return self.q_global is not None

    def extra_repr(self) -> str:
        extra = f", backend={self.backend!r}" if self.backend != "auto" else ""
        extra += ", global_projections=True" if self.global_projections else ""
        return (f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}, impl={self.impl!r}, "
                f"dropout={self.dropout}, causal={self.causal}{extra}")

    @classmethod
    def from_longformer(cls, hf_self_attention: nn.Module, *, impl: str = "hybrid",
                        backend: str = "auto") -> "HybridSparseAttention":
        """Our layer with the weights of transformers' ``LongformerSelfAttention`` (copied).

        Its ``attention_window`` (2w) becomes ``window = w``; ``query/key/value`` become ``q/k/v_proj``
        and ``query_global/key_global/value_global`` the global projections. ``out_proj`` is the
        identity: Longformer's output dense layer lives outside its self-attention.
        """
        needed = ("query", "key", "value", "query_global", "key_global", "value_global",
                  "num_heads", "one_sided_attn_window_size")
        missing = [name for name in needed if not hasattr(hf_self_attention, name)]
        if missing:
            raise TypeError(f"hf_self_attention must be a transformers LongformerSelfAttention; "
                            f"{type(hf_self_attention).__name__} has no {missing}")
        src = hf_self_attention
        dim, bias = src.query.in_features, src.query.bias is not None
        dropout = float(getattr(src, "dropout", 0.0))
        layer = cls(dim, src.num_heads, int(src.one_sided_attn_window_size), impl=impl, dropout=dropout,
                    bias=bias, global_projections=True, backend=backend)
        layer.out_proj = nn.Identity()
        pairs = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"),
                 ("q_global", "query_global"), ("k_global", "key_global"), ("v_global", "value_global"))
        with torch.no_grad():
            for ours, theirs in pairs:
                getattr(layer, ours).weight.copy_(getattr(src, theirs).weight)
                if bias:
                    getattr(layer, ours).bias.copy_(getattr(src, theirs).bias)
        weight = src.query.weight
        return layer.to(device=weight.device, dtype=weight.dtype).train(src.training)

    def forward(self, x: Tensor, global_mask: Tensor = None, key_padding_mask: Tensor = None,
                return_weights: bool = False):
        if torch.jit.is_tracing():
            raise RuntimeError("HybridSparseAttention cannot be traced with torch.jit.trace: the trace would bake "
                               "in the global tokens, padding and block layout of the example input and give "
                               "wrong results on any other. Run it eagerly, or use torch.compile.")
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
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        extra = {"dropout_p": self.dropout} if (self.training and self.dropout > 0) else {}
        if self.impl == "hybrid":
            extra["backend"] = self.backend
        res = sparse_attention(q, k, v, self.window, global_mask, key_padding_mask, causal=self.causal,
                               return_weights=return_weights, impl=self.impl, **extra)
        out, weights = res if return_weights else (res, None)
        if self.global_projections and global_mask is not None:
            out, weights = self._global_rows(x, out, weights, global_mask, key_padding_mask)
        y = self.out_proj(out.transpose(1, 2).reshape(B, T, self.dim))       # (B, T, dim)
        if key_padding_mask is not None:
            y = y.masked_fill(key_padding_mask[..., None], 0.0)
        return (y, weights) if return_weights else y

    def _heads(self, t: Tensor) -> Tensor:
        """(B, n, dim) -> (B, H, n, Dh)."""
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _global_rows(self, x: Tensor, out: Tensor, weights: Optional[Tensor], global_mask: Tensor,
                     key_padding_mask: Optional[Tensor]):
        """Replace the global rows of ``out`` (B, H, T, Dh) by attention through the global projections.

        The backend computed these G rows too, from ``q_proj``/``k_proj``/``v_proj``, and they are
        overwritten here: no backend can skip its global rows, and their G x T pass is small next to the band.
        """
        B, T, _ = x.shape
        idx, valid = global_slots(global_mask, key_padding_mask, B, T, x.device)   # (B, G), (B, G)
        G = idx.shape[1]
        if G == 0:
            return out, weights
        xg = x.gather(1, idx[..., None].expand(B, G, self.dim))               # (B, G, dim) global tokens
        qg = self._heads(self.q_global(xg))                                    # (B, H, G, Dh)
        kg, vg = self._heads(self.k_global(x)), self._heads(self.v_global(x))  # (B, H, T, Dh) each
        dropout_p = self.dropout if self.training else 0.0
        rows = global_rows(qg, kg, vg, idx, valid, key_padding_mask, self.causal, self.head_dim ** -0.5,
                           accum_dtype(x.dtype), dropout_p)                    # (B, H, G, Dh), (B, H, G, T), ...
        out = scatter_rows(out, idx, valid, rows.out)                          # (B, H, T, Dh)
        if weights is not None:
            weights = scatter_rows(weights, idx, valid, rows.probs)            # (B, H, T, T)
        return out, weights
