"""KV caches for generation: a fixed-size ring for windowed layers, a growing one for full layers.

**The ring.** A causal layer with window ``w`` lets the newest query ``i`` read the keys
``0 <= i - j <= w``: exactly ``w + 1`` of them, whatever ``i`` is. So a windowed layer never needs
more than ``w + 1`` keys (plus its ``sinks`` sink *tokens*, the first positions, kept forever):
:class:`RingKVCache` holds ``sinks + w + 1`` slots, allocated once. Position ``p`` lives in slot
:func:`ring_slot` ``(p)``: ``p`` itself for a sink token, else ``sinks + p mod (w + 1)``. Writing
position ``i`` overwrites position ``i - w - 1``, the one key the next query may no longer read.
Memory does not grow with the tokens generated (``cache.numel`` is constant once the ring is full).

**Why the slot order never matters.** The slots are not in position order (after a wrap the
oldest key sits in the middle). That is harmless because every key is stored with its *absolute*
position (``positions``, beside the keys):

* the softmax is a sum over keys, so permuting keys together with their values permutes the
  scores and the weights the same way and leaves ``sum_j p_j v_j`` unchanged;
* the keys are rotated by RoPE *before* they are cached, with their absolute position, and the
  query with its own; a rotated score depends only on ``i - j`` (RoPE is relative), never on a slot;
* the mask is computed from positions (:func:`tutor.decode.rule.allowed_by_position`), not slots.

**StreamingLLM's other choice.** StreamingLLM caches keys *before* RoPE and rotates them by their
rank inside the cache (:meth:`CacheView.in_cache_positions`: sinks ``0 .. sinks-1``, then the
window oldest first), the query by its own rank. Relative distances then stay below the cache
size (the model never sees a distance it was not trained on), but once the ring has evicted
anything they are *not* the distances of the sequence: the result is no longer the windowed
model's (``TinyDecoder`` with ``positions="in_cache"``, and the tests, show both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..arguments import check_int
from .inputs import check_kv_pair, check_positions
from .rule import allowed_by_position

__all__ = ["CacheView", "RingKVCache", "GrowingKVCache", "ring_slot"]


def ring_slot(position: int, window: int, sinks: int = 0) -> int:
    """The slot of ``position`` in a ring cache: ``position`` for a sink token, else ``sinks + position mod (window + 1)``."""
    position = check_int("position", position, 0)
    window, sinks = check_int("window", window, 0), check_int("sinks", sinks, 0)
    return position if position < sinks else sinks + position % (window + 1)


@dataclass(frozen=True)
class CacheView:
    """What a cache holds for the queries to read, in slot order (not position order).

    keys, values: (B, H_kv, N, Dh); positions: (N,) long, the absolute position of each slot, ``-1``
    for an empty slot; ``window`` (None: a full layer) and ``sinks``: the rule the keys are read
    under. ``N`` is ``sinks + window + 1`` for a ring, the prefix length for a growing cache.
    """
    keys: Tensor
    values: Tensor
    positions: Tensor
    window: Optional[int]
    sinks: int = 0

    @property
    def valid(self) -> Tensor:
        """(N,) bool: the slots that hold a key."""
        return self.positions >= 0

    @property
    def newest(self) -> int:
        """The newest position held (the position of the query of a decode step), -1 when empty."""
        return int(self.positions.max()) if self.positions.numel() else -1

    def allowed(self, q_positions: Tensor) -> Tensor:
        """(Tq, N) bool: which slots each query (absolute position) may read."""
        return allowed_by_position(q_positions.to(self.positions.device), self.positions,
                                   self.window, self.sinks)

    def in_cache_positions(self) -> Tensor:
        """StreamingLLM's positions: each valid slot's rank among the valid slots by position; (N,) long, -1 if empty."""
        p = self.positions
        ranks = ((p[None, :] >= 0) & (p[None, :] < p[:, None])).sum(-1)       # (N,): earlier keys held
        return torch.where(p >= 0, ranks, torch.full_like(p, -1))

    def extended(self, k: Tensor, v: Tensor, positions: Tensor) -> "CacheView":
        """This view with a chunk's keys appended (what the chunk's own queries read in a prefill).

        k, v: (B, H_kv, C, Dh); positions (C,). A new (B, H_kv, N + C, Dh) view; the cache is untouched.
        """
        if self.positions.numel() == 0:                                   # an empty cache
            return CacheView(k, v, positions.to(k.device), self.window, self.sinks)
        return CacheView(torch.cat([self.keys, k], dim=2),                # (B, H_kv, N + C, Dh)
                         torch.cat([self.values, v], dim=2),
                         torch.cat([self.positions, positions.to(self.positions.device)]),
                         self.window, self.sinks)


class _PositionedCache:
    """What both caches share: positions fed in order, each once, and one (B, H_kv, Dh, dtype)."""

    window: Optional[int] = None
    sinks: int = 0

    def __init__(self) -> None:
        self.keys: Optional[Tensor] = None
        self.values: Optional[Tensor] = None
        self.positions = torch.empty(0, dtype=torch.long)
        self.next_position = 0                                           # positions 0 .. next - 1 fed

    def _check_chunk(self, k: Tensor, v: Tensor, positions) -> Tensor:
        check_kv_pair(k, v)
        if self.keys is not None:
            B, H, _, Dh = self.keys.shape
            if (k.shape[0], k.shape[1], k.shape[3]) != (B, H, Dh) or k.dtype != self.keys.dtype \
                    or k.device != self.keys.device:
                raise ValueError(f"k must continue the cache's (B, H_kv, ., Dh) = ({B}, {H}, ., {Dh}) "
                                 f"{self.keys.dtype} on {self.keys.device}, got {tuple(k.shape)} "
                                 f"{k.dtype} on {k.device}")
        return check_positions(positions, self.next_position, k.shape[2])

    def view(self) -> CacheView:
        """The keys, values and positions the newest query reads (before any update: an empty view).

        The view shares the cache's storage (no copy): read it before the next :meth:`update`.
        """
        if self.keys is None:
            empty = torch.empty(0, 0, 0, 0)
            return CacheView(empty, empty, torch.empty(0, dtype=torch.long), self.window, self.sinks)
        return CacheView(self.keys, self.values, self.positions.to(self.keys.device), self.window, self.sinks)

    @property
    def numel(self) -> int:
        """Elements held in the cache's tensors (keys, values, positions)."""
        held = [t for t in (self.keys, self.values, self.positions) if t is not None]
        return sum(t.numel() for t in held)

    @property
    def nbytes(self) -> int:
        """Bytes held in the cache's tensors (keys, values, positions)."""
        held = [t for t in (self.keys, self.values, self.positions) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


class RingKVCache(_PositionedCache):
    """Fixed memory: ``sinks`` sink tokens kept forever plus a ring of the last ``window + 1`` keys.

    ``window``: the causal window ``w`` of the layer (query ``i`` reads ``0 <= i - j <= w``);
    ``sinks``: how many first positions (sink *tokens*, StreamingLLM) are kept forever. Feed it with
    :meth:`update`: a prefill of one or several chunks, then one token at a time, positions in order
    and each once. :meth:`view` returns what the newest query may read: ``sinks + window + 1``
    slots (keys, values, absolute positions, a validity mask), never a T-sized tensor. Decoding
    through it equals full causal attention under the (sinks + window) mask at every step; see the
    module docstring for why the slot order does not matter.
    """

    def __init__(self, window: int, sinks: int = 0) -> None:
        super().__init__()
        self.window = check_int("window", window, 0)
        self.sinks = check_int("sinks", sinks, 0)
        self.size = self.sinks + self.window + 1
        self.positions = torch.full((self.size,), -1, dtype=torch.long)   # (N,), -1 = empty

    def __repr__(self) -> str:
        held = sorted(p for p in self.positions.tolist() if p >= 0)
        return (f"RingKVCache(window={self.window}, sinks={self.sinks}, slots={self.size}, "
                f"holds positions {held}, next_position={self.next_position})")

    def slot(self, position: int) -> int:
        """Where ``position`` lives: :func:`ring_slot`."""
        return ring_slot(position, self.window, self.sinks)

    def update(self, k: Tensor, v: Tensor, positions=None) -> None:
        """Store a chunk of keys and values at the next positions.

        k, v: (B, H_kv, C, Dh), already rotated by RoPE at their absolute positions; ``positions``:
        None (continue) or the (C,) positions ``next_position .. next_position + C - 1``. A chunk
        longer than the ring keeps its sink tokens and its last ``window + 1`` keys: the others
        could be read by no later query. (Queries *inside* a chunk read the chunk's keys before
        they are evicted: see :meth:`CacheView.extended`.)
        """
        pos = self._check_chunk(k, v, positions)                          # (C,)
        if self.keys is None:
            B, H, _, Dh = k.shape
            self.keys = k.new_zeros(B, H, self.size, Dh)                    # (B, H_kv, N, Dh), once
            self.values = v.new_zeros(B, H, self.size, Dh)
            self.positions = self.positions.to(k.device)
        last = int(pos[-1])
        keep = (pos < self.sinks) | (pos > last - self.window - 1)        # (C,): sinks + last w + 1
        kept = pos[keep]                                                  # (C',) distinct slots
        slots = torch.where(kept < self.sinks, kept, self.sinks + kept % (self.window + 1))
        idx = keep.nonzero().squeeze(1).to(k.device)                     # (C',) chunk indices
        slots = slots.to(k.device)
        self.keys[:, :, slots] = k.index_select(2, idx)                   # (B, H_kv, C', Dh)
        self.values[:, :, slots] = v.index_select(2, idx)
        self.positions[slots] = kept.to(self.positions.device)
        self.next_position = last + 1


class GrowingKVCache(_PositionedCache):
    """A full (``window=None``) layer's cache: every key, in position order; grows by one per token.

    The same interface as :class:`RingKVCache` (:meth:`update`, :meth:`view`, ``numel``), so a
    model with interleaved local and global layers (Gemma's 5 : 1) holds one ring per local layer
    and one growing cache per global layer.
    """

    def update(self, k: Tensor, v: Tensor, positions=None) -> None:
        """Append a chunk: k, v (B, H_kv, C, Dh); positions None or the next C positions in order."""
        pos = self._check_chunk(k, v, positions)                          # (C,)
        if self.keys is None:
            self.keys, self.values = k.clone(), v.clone()                 # (B, H_kv, C, Dh)
            self.positions = pos.to(k.device)
        else:
            self.keys = torch.cat([self.keys, k], dim=2)                  # (B, H_kv, T + C, Dh)
            self.values = torch.cat([self.values, v], dim=2)
            self.positions = torch.cat([self.positions, pos.to(self.positions.device)])
        self.next_position = int(pos[-1]) + 1
