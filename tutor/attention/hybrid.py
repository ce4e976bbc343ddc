"""``hybrid_attention``: one entry point over the memory-linear backends.

Each backend is registered with a function that says whether it can run on given inputs (and
why not). ``backend="auto"`` picks the first that can, in order of preference for the device;
naming an unavailable backend raises a ``ValueError`` that says why and what to use instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from torch import Tensor

from ._checks import check_inputs
from .blocked import blocked_attention


@dataclass(frozen=True)
class Backend:
    """A hybrid backend: its function and a probe ``why_not(q, needs_grad, return_weights) -> str | None``."""
    name: str
    fn: Callable
    why_not: Callable[[Tensor, bool, bool], Optional[str]]


def _always(q, needs_grad, return_weights):
    return None


BACKENDS: Dict[str, Backend] = {
    "blocked": Backend("blocked", blocked_attention, _always),
}

#: preference order of ``auto`` per device type (first available wins)
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {"cuda": ("blocked",), "cpu": ("blocked",)}


def register_backend(backend: Backend, *, prefer_on: Tuple[str, ...] = ()) -> None:
    """Add a backend; ``prefer_on`` device types put it first in ``auto``'s order there."""
    BACKENDS[backend.name] = backend
    for device in prefer_on:
        AUTO_ORDER[device] = (backend.name,) + tuple(n for n in AUTO_ORDER.get(device, ()) if n != backend.name)


def choose_backend(q: Tensor, backend: str = "auto", *, needs_grad: bool = False,
                   return_weights: bool = False) -> Backend:
    """The backend that will run: the named one if it can, else the best ``auto`` choice."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        for name in AUTO_ORDER.get(q.device.type, ("blocked",)):
            if name in BACKENDS and BACKENDS[name].why_not(q, needs_grad, return_weights) is None:
                return BACKENDS[name]
        return BACKENDS["blocked"]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {backend!r}")
    reason = BACKENDS[backend].why_not(q, needs_grad, return_weights)
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot run here: {reason}. "
                         f"Use backend='auto' or backend='blocked' (works everywhere).")
    return BACKENDS[backend]


def hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                     global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                     causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                     backend: str = "auto", dropout_p: float = 0.0):
    """Memory-linear local + global attention (SPEC.md), on the chosen backend.

    q, k: (B, H, T, Dh); v: (B, H, T, Dv); global_mask, key_padding_mask: (B, T) bool or None.
    Returns out (B, H, T, Dv) [, weights (B, H, T, T)]. ``backend``: "auto" | "blocked" | ...
    (see ``BACKENDS``).
    """
    check_inputs(q, k, v, window, global_mask, key_padding_mask, scale)
    needs_grad = any(t.requires_grad for t in (q, k, v)) or dropout_p > 0
    chosen = choose_backend(q, backend, needs_grad=needs_grad, return_weights=return_weights)
    kwargs = {"dropout_p": dropout_p} if dropout_p > 0 else {}
    return chosen.fn(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                     return_weights=return_weights, **kwargs)
