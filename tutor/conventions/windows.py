"""Window converters: our one-sided radius ``w`` (docs/spec.md) in every other library's words, and back.

Ours: query ``i`` reads key ``j`` when ``|i - j| <= w`` (``2w + 1`` keys in the middle of the
sequence); with ``causal=True`` when ``0 <= i - j <= w`` (``w + 1`` keys, the query itself included).

Each ``to_<library>`` returns the setting that selects exactly our pairs, each ``from_<library>``
the ``w`` of a setting; both raise ``ValueError`` (naming the argument) where the library's
convention cannot say what ours says (an odd total width, an asymmetric window, a bucketed
window, a window of 0 where the library needs a positive number). BigBird's band is made of
blocks, not a sliding window: :func:`bigbird_window_bounds` says what it covers instead.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ..arguments import check_int, check_window

__all__ = ["to_longformer", "from_longformer", "to_flash_window_size", "from_flash_window_size",
           "to_local_attention", "from_local_attention", "to_natten", "from_natten",
           "to_sliding_window", "from_sliding_window", "to_bigbird", "bigbird_window_bounds"]


def _window(window) -> int:
    return check_window(window)


# --------------------------------------------------------------------------- HF Longformer
def to_longformer(window: int) -> int:
    """Longformer's ``attention_window``: the *total* width ``2w`` (it must be even and positive)."""
    w = _window(window)
    if w == 0:
        raise ValueError("window=0 cannot be expressed in Longformer: attention_window must be positive "
                         "(attention_window=2 is w=1)")
    return 2 * w


def from_longformer(attention_window: int) -> int:
    """Our ``w`` from Longformer's ``attention_window`` (``attention_window // 2`` keys on each side)."""
    aw = check_int("attention_window", attention_window, 1)
    if aw % 2:
        raise ValueError(f"attention_window must be even (it is 2w, the total width), got {aw}; "
                         f"Longformer itself refuses odd values")
    return aw // 2


# --------------------------------------------------------------------------- flash-attn
def to_flash_window_size(window: int, causal: bool = False) -> Tuple[int, int]:
    """flash-attn's inclusive ``window_size=(left, right)``: ``(w, w)``, or ``(w, 0)`` when causal."""
    w = _window(window)
    return (w, 0) if causal else (w, w)


def from_flash_window_size(left: int, right: int, causal: bool = False) -> int:
    """Our ``w`` from flash-attn's ``window_size=(left, right)`` (keys ``i - left .. i + right``, inclusive).

    With ``causal=True`` flash-attn never reads a later key, so ``right`` does not matter. ``-1``
    (flash-attn's "no limit") has no ``w``: pass ``window = T - 1`` for full attention.
    """
    for name, value in (("left", left), ("right", right)):
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"window_size {name} must be an int >= -1, got {value!r}")
    if left == -1 or (right == -1 and not causal):
        raise ValueError(f"window_size=({left}, {right}): -1 means no limit on that side; our window has no "
                         f"infinity, use window = T - 1 for full attention")
    if not causal and left != right:
        raise ValueError(f"window_size=({left}, {right}) is asymmetric; our window reads w keys on each side "
                         f"(left == right), or only the left ones with causal=True")
    return left


# --------------------------------------------------------------------------- lucidrains' local-attention
def to_local_attention(window: int, causal: bool = False) -> Dict[str, object]:
    """``LocalAttention(**settings)`` that reads exactly our window (``exact_windowsize=True``).

    Buckets of ``window_size = w`` keys, one bucket looked at on each side, cut to ``|i - j| <= w``.
    ``w = 0`` is one-token buckets that look nowhere. The sequence length must be a multiple of
    ``window_size`` (or pass ``autopad=True`` *and* a ``mask``: padded keys are read otherwise).
    """
    w = _window(window)
    look = 0 if w == 0 else 1
    return {"window_size": max(w, 1), "look_backward": look, "look_forward": 0 if causal else look,
            "exact_windowsize": True, "causal": bool(causal)}


def from_local_attention(window_size: int, look_backward: int = 1, look_forward: int = None,
                         exact_windowsize: bool = False, causal: bool = False) -> int:
    """Our ``w`` from ``LocalAttention`` settings; only an exact, symmetric window has one.

    Without ``exact_windowsize`` a query reads whole buckets, so how far it reaches depends on where
    it sits in its bucket (between ``window_size * look`` and ``window_size * (look + 1) - 1``).
    """
    ws = check_int("window_size", window_size, 1)
    back = check_int("look_backward", look_backward, 0)
    fwd = (0 if causal else 1) if look_forward is None else check_int("look_forward", look_forward, 0)
    if not exact_windowsize:
        raise ValueError("exact_windowsize=False reads whole buckets: the reach depends on the query's place "
                         "in its bucket, which is not a sliding window; set exact_windowsize=True")
    if not causal and back != fwd:
        raise ValueError(f"look_backward={back} and look_forward={fwd} differ: an asymmetric window has no w")
    return ws * back


# --------------------------------------------------------------------------- NATTEN
def to_natten(window: int) -> int:
    """NATTEN's ``kernel_size = 2w + 1`` (odd): same pairs as ours in the interior only.

    Near the ends NATTEN shifts the neighbourhood inward so every query keeps ``kernel_size`` keys,
    where ours reads fewer (:func:`tutor.conventions.natten_pairs` draws it). Needs ``T >= kernel_size``.
    """
    return 2 * _window(window) + 1


def from_natten(kernel_size: int) -> int:
    """Our ``w`` from an odd NATTEN ``kernel_size`` (an even one has no centre, so no symmetric ``w``)."""
    k = check_int("kernel_size", kernel_size, 1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (2w + 1) to have a symmetric w, got {k}")
    return (k - 1) // 2


# --------------------------------------------------------------------------- Mistral / Gemma configs
def to_sliding_window(window: int) -> int:
    """A Mistral/Gemma ``sliding_window`` (causal): it counts the query itself, so ``w + 1``."""
    return _window(window) + 1


def from_sliding_window(sliding_window: int) -> int:
    """Our causal ``w`` from a Mistral/Gemma ``sliding_window``: ``sliding_window - 1`` earlier keys."""
    return check_int("sliding_window", sliding_window, 1) - 1


# --------------------------------------------------------------------------- HF BigBird
def bigbird_window_bounds(block_size: int) -> Tuple[int, int]:
    """``(inner, outer)``: BigBird's 3-block band holds our window ``inner`` and lies inside ``outer``.

    A query in block ``q`` reads key blocks ``q - 1 .. q + 1``: at least ``b`` keys on each side,
    at most ``2b - 1`` on one side, depending on where it sits in its block.
    """
    b = check_int("block_size", block_size, 1)
    return b, 2 * b - 1


def to_bigbird(window: int, *, cover: bool = False) -> Dict[str, int]:
    """BigBird has no sliding window; ``cover=True`` gives the smallest band that holds ours.

    Raises ValueError unless ``cover=True``, then returns ``{"block_size": w, "num_random_blocks": 0}``:
    a superset of our pairs (up to ``2w - 1`` keys on one side), not the same pairs.
    """
    w = _window(window)
    if not cover:
        raise ValueError(f"BigBird attends whole blocks (query block q reads key blocks q-1..q+1), so no "
                         f"block_size selects exactly |i - j| <= {w}; to_bigbird(window, cover=True) gives "
                         f"the smallest band that contains it")
    if w == 0:
        raise ValueError("window=0: BigBird's band always reads the neighbouring blocks (block_size >= 1)")
    return {"block_size": w, "num_random_blocks": 0}
