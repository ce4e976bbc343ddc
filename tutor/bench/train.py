"""What one point of ``--mode train`` runs: forward + backward of each implementation on one setting.

Implementations (``--impls`` with ``--mode train``): ``dense`` (``scaled_dot_product_attention``
with the bool mask of :func:`tutor.masks.hybrid_mask`, differentiated by autograd: it keeps the
(B, H, T, T) probabilities), ``blocked:autograd`` (the blocked backend with plain autograd: every
chunk's scores, probabilities and span copies are kept) and ``blocked:lean`` (the blocked backend
with :class:`~tutor.attention.lean_backward.LeanBlockedAttention`: q, k, v, the output and one
log-sum-exp per row are kept, chunks are recomputed in the backward pass), and, where they can
train (on CUDA), ``flex_mask`` (FlexAttention with the plain ``hybrid_mask_mod``),
``hybrid:flex``, ``hybrid:triton`` and ``hybrid:auto``. One step is
``out = attention(q, k, v)`` then ``torch.autograd.grad(out, (q, k, v), dO)`` with a fixed seeded dO.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .runs import Setting, backend_name, backend_why_not

TRAIN_IMPLS = "dense,blocked:autograd,blocked:lean"
#: also known to ``--mode train``; the first three are added to the default list on CUDA
TRAIN_GPU_IMPLS = "flex_mask,hybrid:flex,hybrid:triton,hybrid:auto"


def train_estimate_gb(impl: str, s: Setting) -> float:
    """Rough bytes one training step holds at once, to skip runs that cannot fit."""
    rows = s.B * s.H * s.T
    if impl == "dense":       # the bool mask and its float copy: SDPA's fused kernels save one lse per row
        return 6 * s.B * s.T * s.T / 1e9                                  # (measured: ~5.2 B T^2 at T = 4096)
    if impl == "blocked:autograd":   # every chunk's (S + G)-wide scores and probs, span copies, grads
        return rows * (4 * (2 * s.window + 128) + 12 * s.Dh) * 4 / 1e9
    return 12 * rows * s.Dh * 4 / 1e9


def train_why_skip(impl: str, s: Setting, max_gb: float, q: Optional[Tensor] = None) -> Optional[str]:
    """None if ``impl`` should train at this setting, else the reason it is skipped."""
    need = train_estimate_gb(impl, s)
    if need > max_gb:
        return f"needs ~{need:.3g} GB > --max-gb {max_gb:g}"
    return None if q is None else backend_why_not(impl, q, needs_grad=True)


def train_backend_name(impl: str, s: Setting, q: Tensor) -> str:
    """The ``backend`` column of a training row: which backward pass ran."""
    if impl.startswith("blocked:"):
        return impl.split(":", 1)[1]
    return backend_name(impl, s, q, needs_grad=True)


def train_forward(impl: str, s: Setting, q: Tensor, k: Tensor, v: Tensor, gm: Tensor) -> Callable[[], Tensor]:
    """The forward of ``impl`` on these inputs, as autograd sees it when training."""
    from ..attention.blocked import blocked_hybrid_attention
    from ..masks import hybrid_mask
    if impl == "dense":
        mask = hybrid_mask(s.T, s.window, gm, device=q.device)[:, None]    # (B, 1, T, T)
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if impl in ("blocked:autograd", "blocked:lean"):
        backward = impl.split(":", 1)[1]
        return lambda: blocked_hybrid_attention(q, k, v, s.window, gm, backward=backward)
    if impl == "flex_mask" or impl.startswith("hybrid:"):
        from .runs import runner
        return runner(impl, s, q, k, v, gm)
    raise ValueError(f"unknown training impl {impl!r}; choose from {TRAIN_IMPLS},{TRAIN_GPU_IMPLS}")


def train_runners(impl: str, s: Setting, q: Tensor, k: Tensor, v: Tensor, gm: Tensor, seed: int = 1
                  ) -> Tuple[Callable[[], Tensor], Callable[[], Tuple[Tensor, ...]]]:
    """``(forward, step)``: the forward alone, and forward + backward returning ``(out, dq, dk, dv)``.

    q, k, v are used as leaves that need gradients (detached copies of the given ones);
    dO is a seeded (B, H, T, Dh) tensor made here, outside the timed calls.
    """
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    g = torch.Generator().manual_seed(seed)
    d_out = torch.randn(q.shape, generator=g).to(device=q.device, dtype=q.dtype)  # (B, H, T, Dh)
    forward = train_forward(impl, s, q, k, v, gm)

    def step():
        out = forward()
        grads = torch.autograd.grad(out, (q, k, v), d_out)
        return (out.detach(), *grads)

    return forward, step
