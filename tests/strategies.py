"""Shared hypothesis strategies and brute-force references for the mask and attention tests.

The references here are deliberately naive and independent of ``tutor``: the allowed-pair rule
of docs/spec.md is written as plain Python loops over (b, i, j), and the attention reference is a
float64 softmax over a boolean mask (``torch.softmax`` on ``-inf``-filled scores, empty rows set
to zero by hand). Nothing in this file imports ``tutor``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor

Flags = Optional[List[List[bool]]]   # (B, T) as nested lists, or None

GLOBAL_KINDS = ("none", "empty", "first", "last", "first_last", "all", "random", "per_batch_count")
PADDING_KINDS = ("none", "empty", "tail", "random", "one_fully_padded", "all_padded")


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny-tensor tests on one intra-op thread, then restore the setting.

    On a small shared CPU, extra threads only contend for tensors this small (measured: 3-5x
    slower test files under load). Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``
    after importing the fixture.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- brute-force rule
def brute_allowed(T: int, window: int, is_global: Flags = None, is_pad: Flags = None,
                  causal: bool = False, B: Optional[int] = None) -> List[List[List[bool]]]:
    """docs/spec.md's ``allowed[b][i][j]`` with plain loops. B defaults to the masks' B (or 1)."""
    if B is None:
        B = len(is_global) if is_global is not None else len(is_pad) if is_pad is not None else 1
    out = []
    for b in range(B):
        g = is_global[b] if is_global is not None else [False] * T
        p = is_pad[b] if is_pad is not None else [False] * T
        rows = []
        for i in range(T):
            row = []
            for j in range(T):
                ok = abs(i - j) <= window or g[i] or g[j]
                if causal and j > i:
                    ok = False
                if p[i] or p[j]:
                    ok = False
                row.append(ok)
            rows.append(row)
        out.append(rows)
    return out


def as_lists(mask: Optional[Tensor]) -> Flags:
    """(B, T) bool tensor -> nested lists (None stays None)."""
    return None if mask is None else [[bool(x) for x in row] for row in mask.tolist()]


def brute_allowed_tensor(T: int, window: int, global_mask: Optional[Tensor] = None,
                         key_padding_mask: Optional[Tensor] = None, causal: bool = False,
                         B: Optional[int] = None) -> Tensor:
    """:func:`brute_allowed` as a bool tensor (B, T, T)."""
    rule = brute_allowed(T, window, as_lists(global_mask), as_lists(key_padding_mask), causal, B)
    return torch.tensor(rule, dtype=torch.bool).reshape(len(rule), T, T)  # (B, T, T)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor,
                        scale: Optional[float] = None):
    """Float64 masked softmax attention: q, k, v (B, H, T, Dh), allowed (B, T, T) bool.

    Returns ``(out, weights)``: (B, H, T, Dh) and (B, H, T, T), float64; rows with no allowed
    key are exactly zero.
    """
    Dh = q.shape[-1]
    scale = Dh ** -0.5 if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale              # (B, H, T, T)
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1)                                        # NaN on empty rows
    empty = ~allowed.any(-1)[:, None, :, None]                          # (B, 1, T, 1)
    p = torch.where(empty, torch.zeros_like(p), p)
    return p @ v.double(), p                                            # (B, H, T, Dh), (B, H, T, T)


def reference_rows(q: Tensor, k: Tensor, v: Tensor, b: int, i: int, keys: Sequence[int],
                   scale: Optional[float] = None) -> Tensor:
    """Output of query row ``i`` of sequence ``b`` attending only ``keys``: (H, Dh) float64."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if len(keys) == 0:
        return torch.zeros(q.shape[1], v.shape[-1], dtype=torch.float64)
    idx = torch.tensor(sorted(keys))
    s = (k[b, :, idx].double() @ q[b, :, i].double()[:, :, None])[..., 0] * scale  # (H, n)
    p = torch.softmax(s, dim=-1)                                        # (H, n)
    return (p[:, None, :] @ v[b, :, idx].double())[:, 0]                # (H, Dh)


# --------------------------------------------------------------------------- flag patterns
def _random_flags(draw, B: int, T: int) -> Tensor:
    """(B, T) bool with an own random density per sequence (so counts differ across B)."""
    rnd = draw(st.randoms(use_true_random=False))
    dens = [rnd.random() for _ in range(B)]
    return torch.tensor([[rnd.random() < dens[b] for _ in range(T)] for b in range(B)],
                        dtype=torch.bool).reshape(B, T)


@st.composite
def global_masks(draw, B: int, T: int, kinds: Sequence[str] = GLOBAL_KINDS) -> Optional[Tensor]:
    """A (B, T) bool global mask (or None) of one of ``kinds``."""
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    m = torch.zeros(B, T, dtype=torch.bool)
    if kind in ("first", "first_last"):
        m[:, 0] = True
    if kind in ("last", "first_last"):
        m[:, -1] = True
    if kind == "all":
        m[:] = True
    if kind == "random":
        m = _random_flags(draw, B, T)
    if kind == "per_batch_count":      # sequence b gets its own number of global tokens
        rnd = draw(st.randoms(use_true_random=False))
        for b in range(B):
            m[b, rnd.sample(range(T), rnd.randint(0, min(T, 2 * b + 1)))] = True
    return m


@st.composite
def padding_masks(draw, B: int, T: int, kinds: Sequence[str] = PADDING_KINDS) -> Optional[Tensor]:
    """A (B, T) bool key padding mask (or None) of one of ``kinds``; True = padding."""
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    m = torch.zeros(B, T, dtype=torch.bool)
    if kind == "tail":                 # length 0 = a fully padded sequence
        for b in range(B):
            m[b, draw(st.integers(0, T)):] = True
    if kind == "random":
        m = _random_flags(draw, B, T)
    if kind == "one_fully_padded":
        m[draw(st.integers(0, B - 1))] = True
    if kind == "all_padded":
        m[:] = True
    return m


def windows(T: int) -> st.SearchStrategy[int]:
    """Window radii with the edges over-represented: 0, 1, small, T - 1, T, far beyond T."""
    return st.one_of(st.integers(0, 3), st.sampled_from([max(T - 1, 0), T, T + 5]),
                     st.integers(0, 2 * T + 2))


# --------------------------------------------------------------------------- attention cases
@dataclass
class Case:
    """One attention problem: inputs plus the brute-force rule and reference."""
    q: Tensor
    k: Tensor
    v: Tensor
    window: int
    global_mask: Optional[Tensor]
    key_padding_mask: Optional[Tensor]
    causal: bool
    scale: Optional[float]

    @property
    def args(self):
        return (self.q, self.k, self.v, self.window, self.global_mask, self.key_padding_mask)

    @property
    def kwargs(self):
        return {"causal": self.causal, "scale": self.scale}

    @property
    def shape(self):
        return tuple(self.q.shape)

    def allowed(self) -> Tensor:
        """Brute-force (B, T, T) rule."""
        B, _, T, _ = self.q.shape
        return brute_allowed_tensor(T, self.window, self.global_mask, self.key_padding_mask,
                                    self.causal, B)

    def reference(self):
        """Float64 ``(out, weights)`` from the brute-force rule."""
        return reference_attention(self.q, self.k, self.v, self.allowed(), self.scale)

    def cast(self, dtype: torch.dtype) -> "Case":
        return Case(self.q.to(dtype), self.k.to(dtype), self.v.to(dtype), self.window,
                    self.global_mask, self.key_padding_mask, self.causal, self.scale)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        def flags(m):
            return None if m is None else m.int().tolist()
        return (f"Case(shape={self.shape}, window={self.window}, causal={self.causal}, "
                f"scale={self.scale}, global_mask={flags(self.global_mask)}, "
                f"key_padding_mask={flags(self.key_padding_mask)})")


def random_qkv(B: int, H: int, T: int, Dh: int, seed: int, dtype=torch.float32, std: float = 1.0):
    """Seeded standard-normal q, k, v (B, H, T, Dh), each times ``std``."""
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(B, H, T, Dh, generator=g) * std).to(dtype) for _ in range(3))


@st.composite
def cases(draw, max_B: int = 3, max_H: int = 3, min_T: int = 1, max_T: int = 40, max_Dh: int = 8,
          global_kinds: Sequence[str] = GLOBAL_KINDS, padding_kinds: Sequence[str] = PADDING_KINDS,
          causal: Optional[bool] = None, custom_scale: bool = True) -> Case:
    """A random :class:`Case`; T = 1 and the window edges (0, >= T) are drawn often."""
    # sizes from a hypothesis-seeded Random: plain st.integers piles most examples onto T = 1
    rnd = draw(st.randoms(use_true_random=False))
    B, H, Dh = rnd.randint(1, max_B), rnd.randint(1, max_H), rnd.randint(1, max_Dh)
    T = rnd.randint(min_T, max_T)
    window = draw(windows(T))
    gm = draw(global_masks(B, T, global_kinds))
    kpm = draw(padding_masks(B, T, padding_kinds))
    is_causal = draw(st.booleans()) if causal is None else causal
    scale = draw(st.one_of(st.none(), st.floats(-2.0, 2.0, allow_nan=False))) \
        if custom_scale else None
    q, k, v = random_qkv(B, H, T, Dh, draw(st.integers(0, 2 ** 31 - 1)))
    return Case(q, k, v, window, gm, kpm, is_causal, scale)
