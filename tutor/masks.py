"""Attention masks as tiny predicates, in the attention-gym spirit.

A *mask mod* is a function ``mask_mod(batch, head, q_idx, kv_idx) -> bool tensor`` that says whether
query ``q_idx`` may attend key ``kv_idx`` in batch element ``batch`` and head ``head`` (the
argument order of FlexAttention's ``mask_mod``). The arguments are
integer tensors that broadcast against each other, so the same predicate can be evaluated on a
whole grid at once (:func:`create_mask`) or handed to FlexAttention one element at a time.

Factories ``generate_<name>(params)`` build the predicates; :func:`and_masks` and :func:`or_masks`
combine them; :func:`hybrid_mask` materializes the Longformer/BigBird rule of docs/spec.md:

    allowed[batch, i, j] = (|i - j| <= w  or  global[batch, i]  or  global[batch, j])
                           and (j <= i if causal)  and  not pad[batch, i]  and  not pad[batch, j]

Two keyword options widen the local term (both off by default, so the rule above is unchanged):
``dilation=d`` makes it the dilated window ``|i - j| <= w*d and (i - j) % d == 0``, and
``pattern=mod`` ORs in any extra head-independent predicate (BigBird's random blocks, a block
layout, LSH buckets). The pattern zoo lives one floor up, in :mod:`tutor.patterns`, built on the
public names here (:func:`name_mask`, ...). Of ours this module imports only the argument
validators of :mod:`tutor.arguments`, which every public function here uses.
Counting the pairs a mask allows is :func:`tutor.costs.count_allowed`.

A factory whose predicate reads per-sequence data or a fixed-size table records it on the
predicate: ``mod.batch_size`` (B of its data) and ``mod.max_len`` (positions it covers);
:func:`name_mask` (so :func:`and_masks` / :func:`or_masks`) passes them on and :func:`hybrid_mask`
checks them.
"""
from __future__ import annotations

import operator

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .arguments import check_bool_mask, check_dilation, check_flag, check_int, check_pattern, check_window

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "MaskMod", "generate_local_window", "generate_causal", "generate_causal_window",
    "generate_dilated_window", "generate_global", "generate_key_padding", "and_masks", "or_masks",
    "create_mask", "hybrid_mask_mod", "hybrid_rule", "hybrid_mask", "name_mask", "pattern_batch", "global_mask_at",
]


def name_mask(fn: MaskMod, name: str, *parts: MaskMod) -> MaskMod:
    """Set ``fn.__name__`` (plot titles, messages); inherit ``batch_size`` / ``max_len`` from ``parts`` (the most demanding)."""
    fn.__name__ = name
    sizes = [getattr(p, "batch_size", None) for p in parts]
    lens = [getattr(p, "max_len", None) for p in parts]
    if any(x is not None for x in sizes):
        fn.batch_size = max(x for x in sizes if x is not None)
    if any(x is not None for x in lens):
        fn.max_len = min(x for x in lens if x is not None)
    return fn


def generate_local_window(window: int) -> MaskMod:
    """Sliding window: ``|i - j| <= window`` (``2w + 1`` keys, fewer at the edges)."""
    return _window_mod(check_window(window), 1)


def _window_mod(window: int, dilation: int) -> MaskMod:
    """The local term for checked ``window`` and ``dilation`` (see :func:`generate_dilated_window`)."""
    if dilation == 1:
        def local(batch, head, q_idx, kv_idx):
            return (q_idx - kv_idx).abs() <= window
        return name_mask(local, f"local_w{window}")
    reach = window * dilation

    def dilated(batch, head, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= reach) & (d % dilation == 0)
    return name_mask(dilated, f"dilated_w{window}_d{dilation}")


def generate_causal() -> MaskMod:
    """Decoder rule: a query never reads a later key (``j <= i``)."""
    def causal(batch, head, q_idx, kv_idx):
        return kv_idx <= q_idx
    return name_mask(causal, "causal")


def generate_causal_window(window: int) -> MaskMod:
    """Causal sliding window: ``0 <= i - j <= window``."""
    window = check_window(window)
    return name_mask(and_masks(_window_mod(window, 1), generate_causal()),
                  f"causal_local_w{window}")


def generate_dilated_window(window: int, dilation: int = 1) -> MaskMod:
    """Dilated window (Longformer's dilated heads): ``|i - j| <= w*d and (i - j) % d == 0``.

    Still ``2w + 1`` keys per query, spread over a span of ``2wd + 1``; ``dilation=1`` is
    :func:`generate_local_window`.
    """
    return _window_mod(check_window(window), check_dilation(dilation))


def generate_global(global_mask: Tensor) -> MaskMod:
    """Symmetric global attention: global rows read every key, every row reads global keys.

    ``global_mask``: (B, T) bool, True where the token is global.
    """
    def global_(batch, head, q_idx, kv_idx):
        return global_mask[batch, q_idx] | global_mask[batch, kv_idx]
    return name_mask(global_, "global")


def global_mask_at(T: int, positions: Sequence[int]) -> Tensor:
    """The (1, T) bool ``global_mask`` with True at ``positions`` (e.g. ``[0, 17]``), False elsewhere."""
    T = check_int("T", T, 1)
    bad = [p for p in positions if not 0 <= int(p) < T]
    if bad:
        raise ValueError(f"global positions must lie in 0..{T - 1}, got {bad} (T={T})")
    g = torch.zeros(1, T, dtype=torch.bool)
    g[0, [int(p) for p in positions]] = True                               # (1, T)
    return g


def generate_key_padding(key_padding_mask: Tensor) -> MaskMod:
    """Padding: a padded key is never read and a padded query reads nothing.

    ``key_padding_mask``: (B, T) bool, True where the position is padding.
    """
    def not_padding(batch, head, q_idx, kv_idx):
        return ~(key_padding_mask[batch, q_idx] | key_padding_mask[batch, kv_idx])
    return name_mask(not_padding, "not_padding")


def and_masks(*mask_mods: MaskMod) -> MaskMod:
    """A pair is allowed when every predicate allows it."""
    return _combined("and_masks", "&", operator.and_, mask_mods)


def or_masks(*mask_mods: MaskMod) -> MaskMod:
    """A pair is allowed when any predicate allows it."""
    return _combined("or_masks", "|", operator.or_, mask_mods)


def _combined(caller: str, symbol: str, op, mask_mods) -> MaskMod:
    """One predicate folding ``mask_mods`` with ``op`` (``&`` or ``|``), named ``"a & b"`` / ``"a | b"``."""
    if not mask_mods:
        raise ValueError(f"{caller} needs at least one mask_mod")

    def combined(batch, head, q_idx, kv_idx):
        result = mask_mods[0](batch, head, q_idx, kv_idx)
        for mod in mask_mods[1:]:
            result = op(result, mod(batch, head, q_idx, kv_idx))
        return result
    return name_mask(combined, f" {symbol} ".join(m.__name__ for m in mask_mods), *mask_mods)


def create_mask(mask_mod: MaskMod, B: int, T: int, device=None) -> Tensor:
    """Evaluate ``mask_mod`` on the full grid: returns bool (B, T, T), True = allowed."""
    batch = torch.arange(B, device=device)[:, None, None]  # (B, 1, 1)
    head = torch.zeros((), dtype=torch.long, device=device)
    q_idx = torch.arange(T, device=device)[None, :, None]  # (1, T, 1)
    kv_idx = torch.arange(T, device=device)[None, None, :]  # (1, 1, T)
    return mask_mod(batch, head, q_idx, kv_idx).expand(B, T, T).clone()  # (B, T, T)


def _head_free(pattern: MaskMod) -> MaskMod:
    """``pattern`` evaluated for head 0 whatever the head: the extra term is head-independent."""
    def pattern_h0(batch, head, q_idx, kv_idx):
        return pattern(batch, head * 0, q_idx, kv_idx)
    return name_mask(pattern_h0, getattr(pattern, "__name__", "pattern"), pattern)


def hybrid_mask_mod(window: int, global_mask: Optional[Tensor] = None,
                    key_padding_mask: Optional[Tensor] = None, *, causal: bool = False,
                    dilation: int = 1, pattern: Optional[MaskMod] = None) -> MaskMod:
    """The docs/spec.md rule as one predicate: (local | pattern | global) & causal & not padding.

    ``dilation`` turns the local term into :func:`generate_dilated_window`; ``pattern`` (any
    mask_mod, called with head 0) is OR-ed into it. The masks are (B, T) bool tensors (not
    checked here: :func:`hybrid_mask` checks them against T).
    """
    return hybrid_rule(check_window(window), global_mask, key_padding_mask, check_flag("causal", causal),
                       check_dilation(dilation), check_pattern(pattern))


def hybrid_rule(window: int, global_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], causal: bool,
                dilation: int, pattern: Optional[MaskMod]) -> MaskMod:
    """:func:`hybrid_mask_mod` of arguments already checked (the attention door checked them once)."""
    mod = _window_mod(window, dilation)
    if pattern is not None:
        mod = or_masks(mod, _head_free(pattern))
    if global_mask is not None:
        mod = or_masks(mod, generate_global(global_mask))
    if causal:
        mod = and_masks(mod, generate_causal())
    if key_padding_mask is not None:
        mod = and_masks(mod, generate_key_padding(key_padding_mask))
    return mod


def hybrid_mask(T: int, window: int, global_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, *, causal: bool = False,
                device=None, dilation: int = 1, pattern: Optional[MaskMod] = None) -> Tensor:
    """Materialize the hybrid local + global rule of docs/spec.md (with ``dilation`` / ``pattern``).

    Returns bool (B, T, T) where B comes from the masks (or from ``pattern.batch_size`` for a
    per-sequence pattern), (1, T, T) when there is none; True means query i may attend key j.
    Padded query rows are all False.
    """
    T, window, dilation = check_int("T", T, 1), check_window(window), check_dilation(dilation)
    causal, pattern = check_flag("causal", causal), check_pattern(pattern)
    global_mask = check_bool_mask("global_mask", global_mask, None, T)
    key_padding_mask = check_bool_mask("key_padding_mask", key_padding_mask, None, T)
    if global_mask is not None and key_padding_mask is not None \
            and global_mask.shape[0] != key_padding_mask.shape[0]:
        raise ValueError(f"global_mask and key_padding_mask disagree on B: "
                         f"{tuple(global_mask.shape)} vs {tuple(key_padding_mask.shape)}")
    if device is None:
        device = next((m.device for m in (global_mask, key_padding_mask) if m is not None), None)
    global_mask = None if global_mask is None else global_mask.to(device)
    key_padding_mask = None if key_padding_mask is None else key_padding_mask.to(device)
    B = next((m.shape[0] for m in (global_mask, key_padding_mask) if m is not None), None)
    B = pattern_batch(pattern, B, T)
    return create_mask(hybrid_rule(window, global_mask, key_padding_mask, causal, dilation, pattern), B, T, device=device)


def pattern_batch(pattern: Optional[MaskMod], B: Optional[int], T: int) -> int:
    """The batch size to evaluate with: B of the masks, else ``pattern.batch_size``, else 1.

    Raises ValueError when a per-sequence pattern disagrees with B or covers fewer than T positions.
    """
    name = getattr(pattern, "__name__", "pattern")
    max_len = getattr(pattern, "max_len", None)
    if max_len is not None and T > max_len:
        raise ValueError(f"pattern {name!r} covers positions < {max_len}, but T={T}")
    pb = getattr(pattern, "batch_size", None)
    if pb is not None and B is not None and pb != B:
        raise ValueError(f"pattern {name!r} was built for B={pb} sequences, but the masks have B={B}")
    return B if B is not None else (pb or 1)

