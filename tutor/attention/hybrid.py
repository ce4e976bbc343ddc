"""``hybrid_attention``: one entry point over the memory-linear backends.

* ``blocked`` - pure PyTorch, query blocks against key spans (:mod:`.blocked`); every device,
  every dtype, weights, dropout. Training uses its memory-lean backward pass (each chunk
  recomputed from one log-sum-exp per row, :mod:`.lean_backward`); dropout and weights train
  under plain autograd.
* ``flex``    - compiled FlexAttention with a sparse BlockMask (:mod:`.flex`); CPU inference,
  CUDA inference and training.
* ``triton``  - a FlashAttention-style Triton kernel (:mod:`.triton_kernel`), with a recomputing
  backward kernel (:mod:`.triton_backward`); CUDA inference and training.

Every backend module names its entry point ``<backend>_hybrid_attention`` (same arguments as
:func:`hybrid_attention`, minus ``backend``): :func:`~.blocked.blocked_hybrid_attention`,
:func:`~.flex.flex_hybrid_attention`, :func:`~.triton_kernel.triton_hybrid_attention`. Each one
is a thin door: it checks its arguments once (:func:`~.call.attention_call`) and runs the
backend's worker on the validated call (``blocked_forward(call)``, ...). :func:`hybrid_attention`
builds the call once and hands it to the chosen backend's worker (``Backend.fn``): nothing is
checked twice.

Each backend comes with a probe ``why_not(q, needs_grad, return_weights, dropout=False)`` that
returns None when it can run the inputs and a reason otherwise; it runs once per call. Naming a
backend that cannot run raises a ``ValueError`` with that reason; ``backend="auto"`` takes the
first backend of :func:`auto_order` that can run.

Notebook 05's options need backends that know them (``Backend.features``): ``dilation`` runs on
blocked and flex, a ``pattern`` (not band-limited) only on flex. ``auto`` with a pattern takes
flex or raises; it never falls back to a silent dense T x T.

If the backend ``auto`` chose fails at run time (e.g. torch.compile finds no working compiler),
``auto`` runs ``blocked`` instead, warns once, and skips that backend from then on in this
process: :func:`broken_backends` lists them with the error, :func:`reset_broken_backends`
forgets them. A backend named explicitly is never replaced: its error is raised.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from torch import Tensor

from ..arguments import check_dilation, check_flag, check_pattern
from ..masks import MaskMod
from .blocked import blocked_forward
from .call import AttentionCall, attention_call
from .flex import flex_forward, flex_why_not

@dataclass(frozen=True)
class Backend:
    """A hybrid backend: its worker ``fn(call)`` (an :class:`~.call.AttentionCall`, already checked),
    a probe ``why_not(q, needs_grad, return_weights, dropout)`` and the ``features`` of a call it
    supports beyond the plain rule ("dilation", "pattern")."""
    name: str
    fn: Callable
    why_not: Callable[..., Optional[str]]
    summary: str = ""
    features: FrozenSet[str] = frozenset()


def _blocked_why_not(q, needs_grad, return_weights, dropout=False):
    return None


def _triton_why_not(q, needs_grad, return_weights, dropout=False):
    # importing triton_kernel imports triton, which reads TRITON_INTERPRET: only when asked
    return importlib.import_module(".triton_kernel", __package__).triton_why_not(q, needs_grad, return_weights, dropout)


def triton_backend_fn(call: AttentionCall) -> Tensor:
    """Runs :func:`tutor.attention.triton_kernel.triton_forward` on the call (imported on first use)."""
    return importlib.import_module(".triton_kernel", __package__).triton_forward(call)


BACKENDS: Dict[str, Backend] = {
    "blocked": Backend("blocked", blocked_forward, _blocked_why_not,
                       "pure PyTorch query blocks x key spans; any device and dtype, memory-lean backward",
                       frozenset({"dilation"})),
    "flex": Backend("flex", flex_forward, flex_why_not,
                    "compiled FlexAttention, sparse BlockMask; CPU inference, CUDA train+infer",
                    frozenset({"dilation", "pattern"})),
    "triton": Backend("triton", triton_backend_fn, _triton_why_not,
                      "FlashAttention-style Triton kernels; CUDA train+infer"),
}

#: backends that failed at run time under ``auto``: name -> the error, as text (see broken_backends)
_broken: Dict[str, str] = {}


def broken_backends() -> Dict[str, str]:
    """Backends ``auto`` stopped trying after they failed in this process: name -> the error."""
    return dict(_broken)


def reset_broken_backends(*names: str) -> None:
    """Let ``auto`` try these backends again (all of them when no name is given)."""
    for name in names or tuple(_broken):
        _broken.pop(name, None)


def mark_broken(name: str, exc: BaseException) -> None:
    """Record that backend ``name`` failed under ``auto`` and say so once, in a RuntimeWarning."""
    _broken[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    warnings.warn(f"hybrid_attention(backend='auto'): {name!r} failed ({_broken[name]}); ran 'blocked' instead, "
                  f"and 'auto' skips {name!r} from now on in this process "
                  f"(tutor.attention.hybrid.broken_backends() lists what it skips, reset_broken_backends() "
                  f"tries again)", RuntimeWarning, stacklevel=3)


def auto_order(q: Tensor, needs_grad: bool) -> Tuple[str, ...]:
    """Backends ``auto`` tries, fastest first, for q's device and grad need.

    CUDA, measured on an H200 (docs/benchmarks/gpu.md; bfloat16 and float16, B=1, H=16, Dh=64,
    w=256, T=16384..131072): Triton first (4.5 ms at T=65536 bf16 inference, 12.8 ms per training
    step); then, for inference, blocked (17.6 ms) before flex (48 ms), and for training flex
    (58 ms per step) before blocked's lean backward (65 ms). float32 on CUDA was checked for
    correctness but not timed; it follows the same order. CPU: blocked, always: measured faster
    than compiled FlexAttention for w = 32..256 in float32, float16 and bfloat16
    (docs/benchmarks/cpu.md), and it never waits for a compiler; with a gradient it trains
    through the lean backward pass (docs/benchmarks/train.md).
    """
    if q.device.type == "cuda":
        return ("triton", "flex", "blocked") if needs_grad else ("triton", "blocked", "flex")
    return ("blocked",)


def _missing(backend: Backend, needs: FrozenSet[str]) -> Optional[str]:
    """Why ``backend`` cannot take the requested options (None when it can)."""
    lacking = sorted(needs - backend.features)
    if not lacking:
        return None
    hint = ("use backend='flex' or dense_attention(..., pattern=...)" if "pattern" in lacking
            else "use backend='blocked' or backend='flex'")
    return f"backend {backend.name!r} does not support {' / '.join(lacking)}; {hint}"


def choose_backend(q: Tensor, backend: str = "auto", *, needs_grad: bool = False,
                   return_weights: bool = False, dropout: bool = False, dilation: int = 1,
                   pattern: Optional[MaskMod] = None) -> Backend:
    """The backend that will run: the named one if it can, else the best ``auto`` choice.

    With a ``pattern`` ``auto`` only considers backends that support it (flex) and raises a
    ValueError when none can run, rather than silently building the dense (T, T) mask.
    """
    needs = _features(check_dilation(dilation), check_pattern(pattern))
    return _pick(q, backend, check_flag("needs_grad", needs_grad), check_flag("return_weights", return_weights),
                 check_flag("dropout", dropout), needs)


def _features(dilation: int, pattern: Optional[MaskMod]) -> FrozenSet[str]:
    """The options beyond the plain rule that a backend must support."""
    return frozenset(n for n, on in (("dilation", dilation != 1), ("pattern", pattern is not None)) if on)


def _pick(q: Tensor, backend: str, needs_grad: bool, return_weights: bool, dropout: bool,
          needs: FrozenSet[str]) -> Backend:
    """:func:`choose_backend` on checked arguments (each probe runs at most once)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        reasons = []
        for name in auto_order(q, needs_grad) + (("flex",) if "pattern" in needs else ()):
            cand = BACKENDS.get(name)
            if cand is None:
                continue
            if name in _broken:
                reasons.append(f"{name}: failed earlier in this process ({_broken[name]})")
                continue
            reason = _missing(cand, needs) or cand.why_not(q, needs_grad, return_weights, dropout)
            if reason is None:
                return cand
            reasons.append(f"{name}: {reason}")
        if "pattern" in needs:
            raise ValueError("hybrid_attention(backend='auto', pattern=...) needs backend='flex', which cannot "
                             f"run here ({'; '.join(reasons) or 'flex is unavailable'}). "
                             "Use dense_attention(..., pattern=...) for an explicit (T, T) computation.")
        return BACKENDS["blocked"]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {backend!r}")
    reason = _missing(BACKENDS[backend], needs)
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot run these options: {reason}")
    reason = BACKENDS[backend].why_not(q, needs_grad, return_weights, dropout)
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot run here: {reason}. "
                         f"Use backend='auto' or backend='blocked' (works everywhere).")
    return BACKENDS[backend]


def hybrid_attention(q: Tensor, k: Tensor, v: Tensor, window: int,
                     global_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None, *,
                     causal: bool = False, scale: Optional[float] = None, return_weights: bool = False,
                     backend: str = "auto", dropout_p: float = 0.0, dilation: int = 1,
                     pattern: Optional[MaskMod] = None):
    """Memory-linear local + global attention (docs/spec.md), on the chosen backend.

    q, k, v: (B, H, T, Dh); global_mask, key_padding_mask: (B, T) bool or None.
    Returns out (B, H, T, Dh) [, weights (B, H, T, T)]. ``backend``: "auto" | "blocked" |
    "flex" | "triton" (see ``BACKENDS``; "auto" picks by device and grad need, see ``auto_order``).
    ``dilation`` / ``pattern`` widen the local term as in :func:`tutor.masks.hybrid_mask`:
    dilation runs on blocked and flex, a pattern only on flex (ValueError elsewhere).
    The arguments are checked once (:func:`~.call.attention_call`); a window wider than the
    sequence runs as ``(T - 1) // dilation``, which allows exactly the same pairs.
    """
    call = attention_call(q, k, v, window, global_mask, key_padding_mask, causal=causal, scale=scale,
                          return_weights=return_weights, dropout_p=dropout_p, dilation=dilation, pattern=pattern)
    chosen = _pick(q, backend, call.needs_grad, call.return_weights, call.dropout_p > 0,
                   _features(call.dilation, call.pattern))
    if call.empty:                                                         # B = 0 or H = 0: nothing to run
        return call.empty_result()
    if backend != "auto" or chosen.name == "blocked" or pattern is not None:
        return chosen.fn(call)
    try:
        return chosen.fn(call)
    except Exception as exc:  # auto only chose it for speed: fall back to the backend that always runs
        mark_broken(chosen.name, exc)
        return BACKENDS["blocked"].fn(call)
