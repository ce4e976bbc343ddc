"""One validator per kind of argument, shared by every public function of ``tutor``.

An attention entry point, a mask factory, a cost formula and a plot that all take ``window`` judge
the same odd value the same way, because they all call :func:`check_window`. Each validator returns
the value in its plain Python form (``np.int64(2)`` -> ``2``) and raises

* ``TypeError`` for the wrong kind of thing (a float window, a string flag, a float mask), and
* ``ValueError`` for the right kind with a wrong value (a negative window, an infinite scale,
  a mask of the wrong shape or device),

with a message that names the argument and shows what it got. The rules (docs/spec.md):

* **integers** (``window``, ``T``, ``dilation``, block sizes, head counts, ...): anything
  ``operator.index`` accepts - ``int``, NumPy integers, 0-d integer tensors - except ``bool``
  (and a bool tensor). Floats (even ``2.0``), strings, ``None`` and tensors with dimensions are
  a TypeError; a value below the minimum a ValueError.
* **flags** (``causal``, ``return_weights``, ...): ``bool`` or ``numpy.bool_``. Not ``0``/``1``,
  not ``"no"`` (a truthy string would mean True), not a tensor.
* **scale**: None (``1 / sqrt(Dh)``) or a finite real number, zero and negative allowed as in
  PyTorch's ``scaled_dot_product_attention``; a bool or a tensor is a TypeError, NaN or +-inf a
  ValueError.
* **probabilities** (``dropout_p``): a real number in [0, 1) (NaN refused).
* **bool masks** (``global_mask``, ``key_padding_mask``): None or a bool (B, T) tensor.

This module sits on the ground floor: it imports nothing of ours.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["check_int", "check_window", "check_dilation", "check_flag", "check_scale", "check_probability",
           "check_bool_mask", "check_heads", "check_qkv", "check_pattern", "FLOAT_DTYPES"]

#: dtypes q, k, v may have (float64 for gradcheck)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _shown(value) -> str:
    """``type value`` for a message, e.g. ``float 1.5`` or ``Tensor tensor([2])``."""
    return f"{type(value).__name__} {value!r:.80}"


def check_int(name: str, value, minimum: int = 0) -> int:
    """``value`` as a Python int >= ``minimum``.

    Accepts what ``operator.index`` accepts (int, NumPy integers, 0-d integer tensors) except bools;
    bool, float, str, None and tensors with dimensions raise a TypeError naming ``name``, a value
    below ``minimum`` a ValueError.
    """
    kind = f"{name} must be an int >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Tensor) and
                                                (value.dim() != 0 or value.dtype == torch.bool)):
        raise TypeError(f"{kind}, got {_shown(value)}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{kind}, got {_shown(value)}") from None
    if number < minimum:
        raise ValueError(f"{kind}, got {number}")
    return number


def check_window(window, name: str = "window") -> int:
    """The one-sided window ``w``: an int >= 0 (see :func:`check_int`)."""
    return check_int(name, window, 0)


def check_dilation(dilation) -> int:
    """``dilation``: an int >= 1 (1 = the plain window)."""
    return check_int("dilation", dilation, 1)


def check_flag(name: str, value) -> bool:
    """A flag: ``bool`` or ``numpy.bool_``, returned as a bool (``1``, ``"no"``, a tensor: TypeError)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {_shown(value)}")
    return bool(value)


def check_scale(scale) -> Optional[float]:
    """``scale``: None (the caller uses ``1 / sqrt(Dh)``) or a finite real number, as a float.

    Zero and negative scales are allowed (as in ``torch.nn.functional.scaled_dot_product_attention``).
    """
    if scale is None:
        return None
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {_shown(scale)}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_probability(name: str, p) -> float:
    """A probability such as ``dropout_p``: a real number in [0, 1), as a float."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {_shown(p)}")
    if not 0.0 <= float(p) < 1.0:                                          # also refuses NaN
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return float(p)


def check_bool_mask(name: str, mask, B: Optional[int], T: Optional[int], device=None) -> Optional[Tensor]:
    """``mask`` is None or a 2-D bool tensor of shape (B, T) on ``device``.

    ``B`` None: any batch size; ``T`` None: any length; ``device`` None: any device.
    """
    if mask is None:
        return None
    want = "(B, T)" + (f" = ({B}, {T})" if B is not None and T is not None else
                       f" with T={T}" if T is not None else f" with B={B}" if B is not None else "")
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape {want} or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (dtype torch.bool), got {mask.dtype} "
                        f"with shape {tuple(mask.shape)}")
    if mask.dim() != 2 or (T is not None and mask.shape[1] != T) or (B is not None and mask.shape[0] != B):
        raise ValueError(f"{name} must have shape {want}, got {tuple(mask.shape)}")
    if device is not None and mask.device != torch.device(device):
        raise ValueError(f"{name} must be on q's device {device}, got {mask.device}")
    return mask


def check_heads(name: str, t, layout: str = "(B, H, T, Dh)") -> Tensor:
    """One tensor of heads: 4-D, floating (float32, float16, bfloat16; float64 for gradcheck), with at
    least one position and one feature. ``layout`` names the dimensions in the message."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape {layout}, got {t.dim()}-D shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16 (float64 for gradcheck), got {t.dtype}")
    if t.shape[2] == 0 or t.shape[3] == 0:
        raise ValueError(f"{name} must have T >= 1 and Dh >= 1, got shape {tuple(t.shape)}")
    return t


def check_qkv(q, k, v) -> None:
    """q, k, v: float tensors of one shape (B, H, T, Dh), one dtype, one device, T >= 1, Dh >= 1."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4 or t.dtype not in FLOAT_DTYPES:
            check_heads(name, t)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q on {q.device}, k on {k.device}, v on {v.device}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the same (B, H, T, Dh) as q: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if v.shape != q.shape:                                                 # docs/spec.md: all (B, H, T, Dh)
        raise ValueError(f"v must have the same (B, H, T, Dh) as q: q {tuple(q.shape)}, v {tuple(v.shape)}")
    check_heads("q", q)                                                    # T >= 1 and Dh >= 1
    if q.device.type == "meta":
        raise ValueError("q, k, v must hold values (on cpu or cuda), got tensors on the meta device: "
                         "global tokens and padding are read from the data")


def check_pattern(pattern) -> Optional[Callable]:
    """``pattern`` is None or a mask_mod predicate ``(batch, head, q_idx, kv_idx) -> bool``."""
    if pattern is not None and not callable(pattern):
        raise TypeError(f"pattern must be a mask_mod (batch, head, q_idx, kv_idx) -> bool or None, "
                        f"got {type(pattern).__name__}")
    return pattern
