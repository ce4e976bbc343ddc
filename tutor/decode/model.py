"""A small decoder that generates through the caches: RoPE, grouped K/V heads, a layer pattern.

``DecoderConfig(windows=(w, w, w, w, w, None))`` gives one layer per entry: a window ``w`` (a
local layer, read through a :class:`~tutor.decode.cache.RingKVCache`) or ``None`` (a global,
full causal layer, read through a :class:`~tutor.decode.cache.GrowingKVCache`).
:func:`layer_pattern` writes Gemma 3's 5 local : 1 global (or any ratio).

``model(tokens)`` recomputes the whole prefix at once, every layer under its own mask
(:func:`tutor.decode.rule.allowed_by_position`: ``j <= i`` and ``i - j <= w`` or ``j < sinks``):
the oracle. ``model(tokens, caches)`` feeds a chunk through the caches (a prefill of one or several
chunks, then one token at a time) and :meth:`TinyDecoder.generate` decodes greedily; the two agree
at every step (``tests/decode``).

``positions="absolute"`` (the default) rotates queries and keys by their absolute positions before
caching; ``positions="in_cache"`` is StreamingLLM's choice, keys cached unrotated and rotated by
their rank inside the cache at every step (see :mod:`tutor.decode.cache`): equal to the absolute
model until the ring first evicts a key, different afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..arguments import check_int
from .inputs import check_optional_window
from .attend import decode_attention
from .cache import CacheView, GrowingKVCache, RingKVCache
from .rope import apply_rope

__all__ = ["DecoderConfig", "TinyDecoder", "layer_pattern", "POSITION_MODES"]

POSITION_MODES = ("absolute", "in_cache")
Cache = Union[RingKVCache, GrowingKVCache]


def layer_pattern(n_layers: int, window: int, local_per_global: Optional[int] = 5) -> Tuple[Optional[int], ...]:
    """Per-layer windows: ``local_per_global`` local layers then one global (None), repeated.

    ``layer_pattern(6, 512)`` is Gemma 3's ``(512, 512, 512, 512, 512, None)``;
    ``local_per_global=1`` alternates (Gemma 2, gpt-oss); ``None`` makes every layer local (Mistral).
    """
    n_layers, window = check_int("n_layers", n_layers, 0), check_int("window", window, 0)
    if local_per_global is None:
        return (window,) * n_layers
    local_per_global = check_int("local_per_global", local_per_global, 0)
    return tuple(None if (k + 1) % (local_per_global + 1) == 0 else window for k in range(n_layers))


@dataclass(frozen=True)
class DecoderConfig:
    """A tiny decoder: one layer per entry of ``windows`` (an int window or None for a full layer).

    ``n_kv_heads`` must divide ``n_heads`` (grouped K/V heads); ``dim / n_heads`` is the head
    dimension Dh (even, for RoPE). ``sinks``: sink tokens kept by every local layer's ring;
    ``sink_logits``: a learned sink logit per head in every layer (gpt-oss); ``positions``: one of
    :data:`POSITION_MODES`.
    """
    windows: Tuple[Optional[int], ...] = (8, 8, None)
    vocab_size: int = 64
    dim: int = 32
    n_heads: int = 4
    n_kv_heads: int = 2
    sinks: int = 0
    sink_logits: bool = False
    positions: str = "absolute"
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if not isinstance(self.windows, (tuple, list)) or not self.windows:
            raise TypeError(f"windows must be a non-empty tuple of ints or None, got {self.windows!r}")
        object.__setattr__(self, "windows", tuple(check_optional_window(w) for w in self.windows))
        for name in ("vocab_size", "dim", "n_heads", "n_kv_heads"):
            if check_int(name, getattr(self, name), 0) == 0:
                raise ValueError(f"{name} must be >= 1, got 0")
        check_int("sinks", self.sinks, 0)
        if self.n_heads % self.n_kv_heads or self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"n_kv_heads must divide n_heads and dim / n_heads must be an even Dh: "
                             f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, dim={self.dim}")
        if self.positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {POSITION_MODES}, got {self.positions!r}")


class CachedSelfAttention(nn.Module):
    """One decoder layer's attention: RoPE, grouped K/V heads, its window and sinks, a cache or none."""

    def __init__(self, config: DecoderConfig, window: Optional[int]) -> None:
        super().__init__()
        self.config, self.window = config, window
        self.sinks = config.sinks if window is not None else 0
        H, Hkv, Dh = config.n_heads, config.n_kv_heads, config.dim // config.n_heads
        self.q_proj = nn.Linear(config.dim, H * Dh, bias=False)
        self.k_proj = nn.Linear(config.dim, Hkv * Dh, bias=False)
        self.v_proj = nn.Linear(config.dim, Hkv * Dh, bias=False)
        self.o_proj = nn.Linear(H * Dh, config.dim, bias=False)
        self.sink_logits = nn.Parameter(torch.randn(H)) if config.sink_logits else None

    def new_cache(self) -> Cache:
        """A ring for a local layer, a growing cache for a full one."""
        return GrowingKVCache() if self.window is None else RingKVCache(self.window, self.sinks)

    def forward(self, x: Tensor, positions: Tensor, cache: Optional[Cache] = None) -> Tensor:
        """x: (B, C, dim) at the (C,) absolute ``positions``; returns (B, C, dim)."""
        cfg = self.config
        B, C, _ = x.shape
        H, Hkv, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.dim // cfg.n_heads
        q = self.q_proj(x).view(B, C, H, Dh).transpose(1, 2)              # (B, H, C, Dh)
        k = self.k_proj(x).view(B, C, Hkv, Dh).transpose(1, 2)            # (B, H_kv, C, Dh)
        v = self.v_proj(x).view(B, C, Hkv, Dh).transpose(1, 2)            # (B, H_kv, C, Dh)
        absolute = cfg.positions == "absolute"
        if absolute:                                                      # rotate, then cache
            q, k = apply_rope(q, positions, cfg.rope_base), apply_rope(k, positions, cfg.rope_base)
        if cache is None:                                                 # the whole prefix: the oracle
            view = CacheView(k, v, positions, self.window, self.sinks)
        elif C == 1:                                                      # a decode step: store, then read
            cache.update(k, v, positions)
            view = cache.view()                                           # (B, H_kv, sinks + w + 1, Dh)
        else:                                                             # a prefill chunk reads its own keys
            view = cache.view().extended(k, v, positions)                 # before the ring evicts them
            cache.update(k, v, positions)
        if not absolute:                                                  # StreamingLLM: rank in the cache
            kp = view.positions
            held = (kp >= 0)[None, :]                                     # (1, N)
            q_rank = (held & (kp[None, :] < positions.to(kp.device)[:, None])).sum(-1)  # (C,)
            q = apply_rope(q, q_rank, cfg.rope_base)
            view = replace(view, keys=apply_rope(view.keys, view.in_cache_positions().clamp(min=0),
                                                 cfg.rope_base))
        step = cache is not None and C == 1
        out = decode_attention(q, view, positions=None if step else positions,
                               sink_logits=self.sink_logits)              # (B, H, C, Dh)
        return self.o_proj(out.transpose(1, 2).reshape(B, C, H * Dh))     # (B, C, dim)


class DecoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: DecoderConfig, window: Optional[int]) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.dim)
        self.attn = CachedSelfAttention(config, window)
        self.mlp_norm = nn.RMSNorm(config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, 2 * config.dim), nn.SiLU(),
                                 nn.Linear(2 * config.dim, config.dim))

    def forward(self, x: Tensor, positions: Tensor, cache: Optional[Cache] = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), positions, cache)             # (B, C, dim)
        return x + self.mlp(self.mlp_norm(x))                              # (B, C, dim)


class TinyDecoder(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size), through per-layer caches or over a whole prefix."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config must be a DecoderConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(DecoderBlock(config, w) for w in config.windows)
        self.norm = nn.RMSNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)

    def new_caches(self) -> List[Cache]:
        """One cache per layer: a ring of ``sinks + w + 1`` slots per local layer, a growing one per global layer."""
        return [block.attn.new_cache() for block in self.blocks]

    def with_config(self, **changes) -> "TinyDecoder":
        """A copy with the same weights and ``changes`` to the config (e.g. ``windows=``, ``positions=``).

        Only changes that keep every weight's shape are allowed (windows, sinks, positions).
        """
        other = TinyDecoder(replace(self.config, **changes))
        other.load_state_dict(self.state_dict())
        return other.train(self.training)

    def _check_caches(self, caches: Sequence[Cache]) -> None:
        if not isinstance(caches, (list, tuple)) or len(caches) != len(self.blocks):
            raise ValueError(f"caches must be a list of {len(self.blocks)} caches (model.new_caches()), "
                             f"got {type(caches).__name__} of length {len(caches) if hasattr(caches, '__len__') else '?'}")
        for n, (block, cache) in enumerate(zip(self.blocks, caches)):
            want = (block.attn.window, block.attn.sinks)
            got = (getattr(cache, "window", "?"), getattr(cache, "sinks", "?"))
            if not isinstance(cache, (RingKVCache, GrowingKVCache)) or got != want:
                raise ValueError(f"caches[{n}] must be layer {n}'s cache (window, sinks) = {want}, "
                                 f"got {type(cache).__name__} with {got}")
        starts = {cache.next_position for cache in caches}
        if len(starts) != 1:
            raise ValueError(f"caches must all hold the same prefix, got next positions {sorted(starts)}")

    def forward(self, tokens: Tensor, caches: Optional[Sequence[Cache]] = None, *,
                positions: Optional[Tensor] = None, return_hidden: bool = False):
        """Logits (B, C, vocab_size) of the chunk ``tokens`` (B, C) long.

        Without ``caches``: the whole prefix at once, each layer under its mask, at ``positions``
        (default ``0 .. C-1``; any increasing (C,) positions re-encode a sub-sequence at its
        original places). With ``caches`` (from :meth:`new_caches`): the chunk continues what the
        caches hold, which it updates. ``return_hidden=True`` also returns the list of each
        layer's output (B, C, dim).
        """
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point() \
                or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be a (B, C) integer tensor with C >= 1, got "
                             f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
        C = tokens.shape[1]
        if caches is not None:
            self._check_caches(caches)
            if positions is not None:
                raise ValueError("positions must be None with caches: a chunk continues the caches")
            start = caches[0].next_position
            positions = torch.arange(start, start + C, device=tokens.device)
        elif positions is None:
            positions = torch.arange(C, device=tokens.device)
        elif not isinstance(positions, Tensor) or positions.shape != (C,) or \
                (C > 1 and not bool((positions[1:] > positions[:-1]).all())):
            raise ValueError(f"positions must be (C,) = ({C},) increasing integers, got {positions!r}")
        x = self.embed(tokens)                                            # (B, C, dim)
        hidden = []
        for n, block in enumerate(self.blocks):
            x = block(x, positions, None if caches is None else caches[n])  # (B, C, dim)
            hidden.append(x)
        logits = self.head(self.norm(x))                                  # (B, C, vocab_size)
        return (logits, hidden) if return_hidden else logits

    @torch.no_grad()
    def generate(self, prompt: Tensor, new_tokens: int, caches: Optional[List[Cache]] = None, *,
                 prefill_chunk: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """Generation through the caches: prefill ``prompt`` (B, P), then one token at a time.

        ``caches``: None for fresh ones (:meth:`new_caches`); caches that already hold a prefix are
        continued, ``prompt`` being the tokens that follow it.

        Greedy (argmax), or sampled from the softmax with ``generator`` (reproducible; a tiny
        random model's greedy stream soon repeats one token). ``prefill_chunk``: prefill in chunks
        of that many tokens (None: one chunk). Returns
        ``tokens`` (B, P + new_tokens) and ``logits`` (B, P + new_tokens - 1, vocab_size), the
        logits at every position fed (every token but the last generated one), which is what
        ``model(tokens[:, :-1])`` recomputes.
        """
        if check_int("new_tokens", new_tokens, 0) == 0:
            raise ValueError("new_tokens must be >= 1, got 0")
        caches = self.new_caches() if caches is None else caches
        size = prompt.shape[1] if prefill_chunk is None else check_int("prefill_chunk", prefill_chunk, 0)
        if size == 0:
            raise ValueError("prefill_chunk must be >= 1, got 0")
        logits = [self(chunk, caches) for chunk in prompt.split(size, dim=1)]  # each (B, c, V)
        tokens = [prompt]
        for step in range(new_tokens):
            last = logits[-1][:, -1]                                      # (B, V)
            nxt = last.argmax(-1, keepdim=True) if generator is None else \
                torch.multinomial(last.float().softmax(-1), 1, generator=generator)  # (B, 1)
            tokens.append(nxt)
            if step < new_tokens - 1:
                logits.append(self(nxt, caches))                          # (B, 1, V)
        return torch.cat(tokens, dim=1), torch.cat(logits, dim=1)
