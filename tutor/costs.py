"""How much work a hybrid attention does: the block and span formulas the blocked backend runs on.

This is the one home of the course's cost formulas. The blocked backend imports its block size and
key span from here, so the cost model and the code cannot drift apart. Pure arithmetic on ints:
it imports nothing of ours.
"""
from __future__ import annotations

import math
from typing import Tuple

__all__ = ["default_block_size", "key_span"]


def default_block_size(window: int, T: int) -> int:
    """Query block ``b``: the power of two nearest ``w`` within [32, 128], at most about T.

    With ``b = w`` a block's span is exactly 3 blocks (``b + 2w = 3b``): matmuls big enough to
    be efficient, and only 1.5x the allowed pairs scored inside the span.
    """
    b = 1 << min(7, max(5, round(math.log2(max(window, 1)))))
    return max(1, min(b, 1 << math.ceil(math.log2(T))))


def key_span(reach: int, b: int, causal: bool = False) -> Tuple[int, int]:
    """``(n_side, S)``: key blocks on each side of a query block and the span of keys it scores.

    ``reach`` is the farthest local key, ``w * dilation``. A query block ``n`` (queries
    ``n*b .. n*b+b-1``) needs keys ``n*b - reach .. n*b+b-1 + reach``: the key blocks
    ``n - n_side .. n + n_side`` with ``n_side = ceil(reach / b)``, so ``S = (2*n_side + 1) * b``
    keys (``(n_side + 1) * b`` when causal). At w = 16, b = 32: n_side = 1, S = 96.
    """
    n_side = math.ceil(reach / b)
    return n_side, (n_side + 1 if causal else 2 * n_side + 1) * b
