"""Check-time inputs for attention exercises: small seeded cases, described in words.

An :class:`AttnCase` is data (T, window, global positions per sequence, tail padding per
sequence, causal, seed); its tensors are built when a check runs. The standard lists below
cover what a wrong answer tends to get wrong: the first and last positions, a global token
sitting inside other tokens' windows, different numbers of global tokens per sequence, padding,
``window = 0`` and ``window >= T``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Shown:
    """A value built at check time whose case label shows it: ``describe(value)`` gives the words."""
    build: Callable[[], Any]
    describe: Callable[[Any], str] = lambda value: repr(value.tolist())

    def __call__(self):
        return self.build()


def positions_per_row(mask: Tensor) -> str:
    """``"True at [[0], [5, 17]]"``: the True positions of each row of a (B, T) bool mask."""
    return "True at " + repr([row.nonzero().flatten().tolist() for row in mask])


def global_mask_of(T: int, *rows: Sequence[int]) -> Tensor:
    """(B, T) bool, B = ``len(rows)``: True at the positions listed in row b, for sequence b."""
    gm = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, positions in enumerate(rows):
        gm[b, list(positions)] = True
    return gm


def shown_global_mask(T: int, *rows: Sequence[int]) -> Shown:
    """:func:`global_mask_of`, built at check time; a case label shows its True positions."""
    return Shown(lambda: global_mask_of(T, *rows), positions_per_row)


@dataclass(frozen=True)
class Case:
    """A case of plain values; a value given as a zero-argument function is built at check time."""
    name: str
    values: Dict[str, Any]

    @property
    def label(self) -> str:
        shown = [f"{k}={v.describe(v())}" if isinstance(v, Shown) else f"{k}={v!r}"
                 for k, v in self.values.items() if isinstance(v, (int, float, list, tuple, Shown))]
        return f"'{self.name}' ({', '.join(shown)})" if shown else f"'{self.name}'"

    def tensors(self) -> Dict[str, Any]:
        return {k: v() if callable(v) else v for k, v in self.values.items()}

    @classmethod
    def table(cls, params: Sequence[str], rows) -> Tuple["Case", ...]:
        """Cases from a table: ``rows`` of ``(name, (value, ...))``, the values in the order of ``params``."""
        return tuple(cls(name, dict(zip(params, values))) for name, values in rows)


@dataclass(frozen=True)
class AttnCase:
    """One input case. ``globals_`` holds the global positions of each sequence (B = its length)."""
    name: str
    T: int
    window: int
    globals_: Tuple[Tuple[int, ...], ...] = ((),)
    pad: Optional[Tuple[int, ...]] = None      # tail padding length per sequence
    causal: bool = False
    H: int = 2
    Dh: int = 4
    seed: int = 0
    block_size: Optional[int] = None            # for blocked exercises only

    @property
    def B(self) -> int:
        return len(self.globals_)

    @property
    def label(self) -> str:
        """How the case is named in feedback: what it tests and its sizes."""
        parts = [f"B={self.B}", f"T={self.T}", f"window={self.window}"]
        if any(self.globals_):
            parts.append("global tokens " + " / ".join(str(list(g)) for g in self.globals_))
        if self.pad and any(self.pad):
            parts.append("tail padding " + "/".join(map(str, self.pad)))
        if self.causal:
            parts.append("causal")
        if self.block_size is not None:
            parts.append(f"block_size={self.block_size}")
        return f"'{self.name}' ({', '.join(parts)})"

    def global_mask(self) -> Tensor:
        """(B, T) bool, True at the global positions."""
        return global_mask_of(self.T, *self.globals_)

    def key_padding_mask(self) -> Tensor:
        """(B, T) bool, True on the last ``pad[b]`` positions of sequence b."""
        pm = torch.zeros(self.B, self.T, dtype=torch.bool)
        for b, n in enumerate(self.pad or ()):
            if n:
                pm[b, self.T - n:] = True
        return pm

    def qkv(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Seeded float32 q, k, v of shape (B, H, T, Dh)."""
        g = torch.Generator().manual_seed(1000 + self.seed)
        shape = (self.B, self.H, self.T, self.Dh)
        return tuple(torch.randn(shape, generator=g) for _ in range(3))  # 3 x (B, H, T, Dh)

    def tensors(self) -> Dict[str, object]:
        """Every argument an attention exercise may take, by its usual name."""
        q, k, v = self.qkv()
        return {"q": q, "k": k, "v": v, "T": self.T, "window": self.window,
                "global_mask": self.global_mask(), "key_padding_mask": self.key_padding_mask(),
                "causal": self.causal, "block_size": self.block_size}

    def describe_query(self, b: int, i: int) -> str:
        """``"query 3 of sequence 0 (a global token)"``: what is special about a position."""
        notes = []
        if i in self.globals_[b]:
            notes.append("a global token")
        if self.pad and self.pad[b] and i >= self.T - self.pad[b]:
            notes.append("padding")
        if self.T > 2 * self.window and (i < self.window or i >= self.T - self.window):
            notes.append("near an edge")           # its window is cut short (and some rows' are not)
        where = f"query {i} of sequence {b}" if self.B > 1 else f"query {i}"
        return where + (f" ({', '.join(notes)})" if notes else "")


#: non-causal, unpadded cases: what every local + global attention must get right
HYBRID_CASES = (
    AttnCase("local window only", T=10, window=2, seed=1),
    AttnCase("a global token inside other tokens' windows", T=12, window=2, globals_=((0, 5),), seed=2),
    AttnCase("different numbers of global tokens per sequence", T=12, window=1,
             globals_=((3,), (0, 6, 11), ()), seed=3),
    AttnCase("window 0", T=8, window=0, globals_=((2,),), seed=4),
    AttnCase("window >= T", T=7, window=9, globals_=((1,), (0, 4)), seed=5),
    AttnCase("global token at the last position", T=9, window=3, globals_=((8,), (0, 8)), Dh=9, seed=6),
)

#: the same, plus padded tails (one sequence entirely padded: its rows must be zeros, not NaN)
PADDED_CASES = HYBRID_CASES + (
    AttnCase("padded tails", T=11, window=2, globals_=((0,), (4,)), pad=(0, 3), seed=7),
    AttnCase("a fully padded sequence", T=6, window=1, globals_=((1,), ()), pad=(2, 6), seed=8),
)

#: local-only cases (no global token at all)
LOCAL_CASES = (
    AttnCase("local window", T=10, window=2, seed=11),
    AttnCase("window 0", T=6, window=0, seed=12),
    AttnCase("window >= T", T=5, window=6, seed=13),
    AttnCase("two sequences, wider window", T=13, window=3, globals_=((), ()), Dh=9, seed=14),
)
