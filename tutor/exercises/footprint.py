"""Does an answer build a T x T tensor? Watch the storage of every tensor its torch operations create.

A question that asks for work "block by block" (04.q3) must not hold all T x T scores at once. A
:class:`~torch.utils._python_dispatch.TorchDispatchMode` sees the output of every torch operation
the call runs; the largest *storage* among them (views share their base's, so an ``expand`` costs
nothing) says what the answer allocated. Like :mod:`.loops` this checks behaviour, in this process
only: all zeros means no torch operation of the answer ran here, and then nothing may be claimed.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .sandbox import probe_with_limit


class _LargestStorage(TorchDispatchMode):
    """Records the largest storage (in elements) among the outputs of the operations it sees."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.element_size() > 0:
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


def largest_storage(fn: Callable, args: tuple) -> int:
    """Elements of the largest tensor storage the torch operations of ``fn(*args)`` create."""
    with _LargestStorage() as mode:
        fn(*args)
    return mode.largest


def builds_square(fn: Callable, args: tuple, T: int, BH: int, seconds: float = 5.0) -> Tuple[Optional[str], int]:
    """``(problem, largest)``: problem names a tensor of at least half of ``BH * T * T`` elements.

    ``BH``: batch x heads of the probe, so the limit is what one (T, T) table per head would take.
    """
    largest, error = probe_with_limit(largest_storage, fn, args, seconds)
    if error is not None:
        return f"on case 'memory probe' (T={T}) your function raised {type(error).__name__}: {error}", 0
    if largest >= BH * T * T // 2:
        return (f"on case 'memory probe' (T={T}) your code creates a tensor of {largest:,} elements, "
                f"as large as the (B, H, T, T) scores of dense attention. The question asks you to work "
                f"block by block: hold only one block's scores, (B, H, b, b + 2w + G), at a time."), largest
    return None, largest
