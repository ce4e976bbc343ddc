"""The marker task: seeded synthetic sequences a window alone cannot solve (notebook 06).

``[CLS]`` at position 0, noise everywhere else except one *marker* token, far from the start, whose
identity is the label. :func:`make_contrast_set` holds out sequences in groups that differ only in
the marker; :func:`receptive_field` says how far local attention alone can carry it.
"""
from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

CLS = 0  # token id of [CLS]; markers are 1..C, noise C+1..C+num_noise


@dataclass(frozen=True)
class MarkerTask:
    """Sequences of ``T`` tokens; the label is which of ``num_classes`` markers appears.

    The single marker sits at a uniformly random position in ``[min_distance, T)``, so the
    answer is at least ``min_distance`` tokens away from ``[CLS]``, where it is read out.
    """
    T: int = 128
    num_classes: int = 2
    num_noise: int = 16
    min_distance: int = 32
    seq_len: InitVar[Optional[int]] = None      # the old name of T, still accepted as a keyword

    def __post_init__(self, seq_len: Optional[int]):
        if seq_len is not None:
            object.__setattr__(self, "T", seq_len)
        for name in ("T", "num_classes", "num_noise", "min_distance"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not self.min_distance < self.T:
            raise ValueError(f"min_distance must be < T, got min_distance={self.min_distance}, "
                             f"T={self.T}")

    @property
    def vocab_size(self) -> int:
        return 1 + self.num_classes + self.num_noise


def make_batch(task: MarkerTask, batch_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    """One batch drawn with ``generator``: tokens (B, T) long, labels (B,) long, marker positions (B,)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    B, T, C = batch_size, task.T, task.num_classes
    tokens = torch.randint(1 + C, task.vocab_size, (B, T), generator=generator)     # (B, T) noise
    labels = torch.randint(0, C, (B,), generator=generator)                         # (B,)
    pos = torch.randint(task.min_distance, T, (B,), generator=generator)            # (B,)
    tokens[:, 0] = CLS
    tokens[torch.arange(B), pos] = 1 + labels                                       # the marker
    return tokens, labels, pos


def make_dataset(task: MarkerTask, size: int, seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    """A fixed set of ``size`` examples from its own seed (use a seed the training never uses)."""
    return make_batch(task, size, torch.Generator().manual_seed(seed))


def make_contrast_set(task: MarkerTask, num_groups: int, seed: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``num_groups`` random sequences, each repeated once per class with only the marker changed.

    Returns tokens (num_groups * C, T), labels (num_groups * C,), marker positions (num_groups * C,);
    rows ``g*C .. g*C + C-1`` are group ``g``. A model blind to the marker gives one answer per
    group, so its accuracy is exactly 1/C.
    """
    tokens, _, pos = make_dataset(task, num_groups, seed)                         # (N, T), (N,)
    C = task.num_classes
    tokens, pos = tokens.repeat_interleave(C, 0), pos.repeat_interleave(C, 0)    # (N*C, T), (N*C,)
    labels = torch.arange(C).repeat(num_groups)                                   # (N*C,) 0, 1, .., C-1, 0, ..
    tokens[torch.arange(len(tokens)), pos] = 1 + labels
    return tokens, labels, pos


def receptive_field(n_layers: int, window: int) -> int:
    """How far information travels with local attention only: ``n_layers * window`` positions.

    Each layer lets a token read ``window`` positions to either side, so after L layers the
    output at position 0 depends on tokens 0 .. L*w and on nothing beyond.
    """
    return n_layers * window
