"""The decoder's rule: which cached key the query at position ``i`` may read.

A causal decoder with a sliding window of ``w`` and ``sinks`` sink *tokens* lets query ``i`` read
key ``j`` when

    j <= i  and  (i - j <= w  or  j < sinks)

(``0 <= i - j <= w`` is the course's causal window, ``w + 1`` keys; the first ``sinks`` positions
are kept forever, StreamingLLM's "attention sinks"). ``window=None`` is a full causal layer.

**A sink token is the course's global token seen from a causal decoder.** The course's causal rule
(:func:`tutor.masks.hybrid_mask` with ``causal=True``) is
``(|i - j| <= w or global[i] or global[j]) and j <= i``. With the global tokens at positions
``0 .. sinks-1`` (:func:`sinks_as_global_mask`):

* the global *columns* are the sinks: every later query reads them, ``global[j]`` = ``j < sinks``;
* a global token also *reads* every key (its row), causally every ``j <= i``. For a sink ``i <
  sinks`` those keys are all sinks themselves (``j <= i < sinks``), so the row adds nothing.

So the two masks are equal, every row and column (:func:`sink_window_mask` equals
``hybrid_mask(T, w, sinks_as_global_mask(T, sinks), causal=True)``, tested). They part only for a
global token that is not among the first positions: at ``g >= sinks`` the course's global row
still reads all of ``0 .. g``, where a decoder that merely kept key ``g`` forever gives query ``g``
the window's row. The columns agree (every later query reads ``g``); row ``g`` differs at the keys
``j < g - w`` (so only when ``g > w``), and no other row does. A cache can serve global *columns* (keep those keys); a global *row* in the middle of the
stream needs every earlier key, which a ring has already evicted.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..masks import (MaskMod, and_masks, create_mask, generate_causal, generate_local_window,
                     global_mask_at, name_mask, or_masks)
from ..arguments import check_int
from .inputs import check_optional_window

__all__ = ["allowed_by_position", "sink_window_mask_mod", "sink_window_mask", "sinks_as_global_mask"]


def allowed_by_position(q_positions: Tensor, k_positions: Tensor, window: Optional[int],
                        sinks: int = 0) -> Tensor:
    """The rule on absolute positions: (Tq, N) bool, True where query ``i`` may read key ``j``.

    ``q_positions``: (Tq,) long; ``k_positions``: (N,) long, ``-1`` for an empty cache slot (never
    read). The slots may come in any order: the rule reads positions, not slot numbers.
    """
    i = q_positions[:, None]                                               # (Tq, 1)
    j = k_positions[None, :]                                               # (1, N)
    ok = (j >= 0) & (j <= i)                                               # (Tq, N)
    if window is not None:
        ok = ok & ((i - j <= window) | (j < sinks))
    return ok


def sink_window_mask_mod(window: int, sinks: int = 0) -> MaskMod:
    """The rule as a mask mod: ``causal & (causal window | key is a sink token)``."""
    window, sinks = check_int("window", window, 0), check_int("sinks", sinks, 0)

    def sink_token(batch, head, q_idx, kv_idx):
        return kv_idx < sinks
    kept = or_masks(generate_local_window(window), name_mask(sink_token, f"sinks{sinks}"))
    return name_mask(and_masks(generate_causal(), kept), f"causal_w{window}_sinks{sinks}")


def sink_window_mask(T: int, window: Optional[int], sinks: int = 0, device=None) -> Tensor:
    """The (1, T, T) bool mask of a decoder layer over a whole prefix (``window=None``: causal)."""
    T = check_int("T", T, 1)
    window = check_optional_window(window)
    sinks = check_int("sinks", sinks, 0)
    if window is None:
        return create_mask(generate_causal(), 1, T, device=device)         # (1, T, T)
    return create_mask(sink_window_mask_mod(window, sinks), 1, T, device=device)  # (1, T, T)


def sinks_as_global_mask(T: int, sinks: int) -> Tensor:
    """The (1, T) ``global_mask`` that makes :func:`tutor.masks.hybrid_mask` (causal) the sink rule."""
    T, sinks = check_int("T", T, 1), check_int("sinks", sinks, 0)
    return global_mask_at(T, range(min(sinks, T)))                         # (1, T)

