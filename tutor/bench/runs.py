"""What one benchmark point runs: its setting, its seeded inputs, and one callable per implementation.

Implementations: ``dense`` (PyTorch's ``scaled_dot_product_attention`` with the bool mask of
:func:`tutor.masks.hybrid_mask`), ``looped`` (small T only), ``unfold``, ``flex_mask`` (compiled
FlexAttention with ``hybrid_mask_mod`` on the original positions) and ``hybrid:<backend>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

DEFAULT_IMPLS = "dense,looped,unfold,flex_mask,hybrid:blocked,hybrid:flex,hybrid:auto"
LOOPED_MAX_T = 1024


@dataclass(frozen=True)
class Setting:
    """One benchmark point: shapes and masks shared by every implementation."""
    B: int
    H: int
    T: int
    Dh: int
    window: int
    G: int
    dtype: str
    device: str


def global_positions(T: int, G: int) -> List[int]:
    """G global tokens spread evenly: positions ``i * T // G`` (0 and T/2 for G = 2)."""
    return sorted({i * T // G for i in range(G)}) if G else []


def make_inputs(s: Setting, seed: int = 0):
    """Seeded q, k, v (B, H, T, Dh) and the (B, T) global mask of a setting."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(s.B, s.H, s.T, s.Dh, generator=g).to(device=s.device, dtype=getattr(torch, s.dtype))
               for _ in range(3))
    gm = torch.zeros(s.B, s.T, dtype=torch.bool)
    gm[:, global_positions(s.T, s.G)] = True
    return q, k, v, gm.to(s.device)


def memory_estimate_gb(impl: str, s: Setting) -> float:
    """Rough bytes an implementation holds at once, to skip runs that cannot fit."""
    rows = s.B * s.H * s.T
    if impl == "dense":       # SDPA's fused CPU/GPU kernels: the bool mask and its float copy
        return 5 * s.B * s.T * s.T / 1e9
    if impl == "unfold":      # K and V windows (B, H, T, 2w+1, Dh) and the scores
        return 2 * rows * (2 * s.window + 1) * (s.Dh + 2) * 4 / 1e9
    return 12 * rows * s.Dh * 4 / 1e9


def runner(impl: str, s: Setting, q, k, v, gm) -> Callable[[], torch.Tensor]:
    """A no-argument callable computing the forward of ``impl`` on these inputs."""
    from ..attention import hybrid_attention, looped_attention, unfold_attention
    from ..attention.flex import flex_hybrid_attention
    from ..masks import hybrid_mask
    if impl == "dense":
        mask = hybrid_mask(s.T, s.window, gm, device=q.device)[:, None]    # (B, 1, T, T)
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if impl == "looped":
        return lambda: looped_attention(q, k, v, s.window, gm)
    if impl == "unfold":
        return lambda: unfold_attention(q, k, v, s.window, gm)
    if impl == "flex_mask":
        return lambda: flex_hybrid_attention(q, k, v, s.window, gm, layout="in_place")
    if impl.startswith("hybrid:"):
        backend = impl.split(":", 1)[1]
        return lambda: hybrid_attention(q, k, v, s.window, gm, backend=backend)
    raise ValueError(f"unknown impl {impl!r}; choose from {DEFAULT_IMPLS},hybrid:triton")


def backend_name(impl: str, s: Setting, q, needs_grad: bool = False) -> str:
    """The ``backend`` column: what actually ran."""
    if impl.startswith("hybrid:"):
        from ..attention import choose_backend
        name = impl.split(":", 1)[1]
        return f"auto:{choose_backend(q, 'auto', needs_grad=needs_grad).name}" if name == "auto" else name
    return {"dense": "sdpa", "looped": "python", "unfold": "torch", "flex_mask": "flex"}[impl]


def backend_why_not(impl: str, q, needs_grad: bool = False) -> Optional[str]:
    """Why the backend under ``flex_mask`` or ``hybrid:<name>`` cannot run ``q`` (None when it can,
    and for ``hybrid:auto``, which always finds one, and for impls without a backend)."""
    if impl != "flex_mask" and (not impl.startswith("hybrid:") or impl == "hybrid:auto"):
        return None
    from ..attention.hybrid import BACKENDS
    name = "flex" if impl == "flex_mask" else impl.split(":", 1)[1]
    if name not in BACKENDS:
        return f"no backend {name!r}"
    return BACKENDS[name].why_not(q, needs_grad, False)


def why_skip(impl: str, s: Setting, q, max_gb: float) -> Optional[str]:
    """None if ``impl`` should run at this setting, else the reason it is skipped."""
    if impl == "looped" and s.T > LOOPED_MAX_T:
        return f"looped only up to T={LOOPED_MAX_T}"
    need = memory_estimate_gb(impl, s)
    if need > max_gb:
        return f"needs ~{need:.3g} GB > --max-gb {max_gb:g}"
    return backend_why_not(impl, q)
