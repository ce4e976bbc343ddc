"""The tile steps the Triton kernels share (:mod:`.triton_kernel`'s forward, :mod:`.triton_backward`).

Each is a small ``@triton.jit`` function the kernels call: where a program works
(:func:`program_tile`), one step of the online softmax (:func:`online_softmax_step`), the
recomputed probabilities and their gradient in the backward (:func:`recompute_tile`), which key tiles a query tile walks
(:func:`band_key_range`), the local rule and the global-column rule on a tile of (query, key)
pairs, which rows of a tile exist and are not padding, loading and storing a (rows, BLOCK_D)
tile, and a row's saved statistics. They are written as plain functions and jitted below when
Triton is installed, so this module imports (and reads) without it.

Units: the kernels score in log2 units (``s * LOG2E``, so that ``exp2`` can be used) and keep
each row's log-sum-exp in log2 units too (``LSE2``); the Python side converts with
:data:`.softmax.LOG2E`. A row with no allowed key has ``LSE2 = +inf`` (docs/spec.md), so the
recomputed ``exp2(s - LSE2)`` is exactly 0 there.
"""
from __future__ import annotations

from types import SimpleNamespace

try:
    import triton
    import triton.language as tl
except ImportError:  # readable without triton; triton_kernel.triton_why_not explains the rest
    triton = None
    tl = SimpleNamespace(constexpr=None)

_jit = triton.jit if triton is not None else (lambda fn: fn)   # plain functions without triton


@_jit
def program_tile(H, stride_b, stride_h, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """Where this program works, from its ids (tile along T, batch*H + head): the positions of its
    BLOCK rows (queries or keys), the feature offsets, ``pid_bh``, the batch index and the offset of
    its (batch, head)."""
    pid_bh = tl.program_id(1)
    batch = pid_bh // H
    base = batch * stride_b + (pid_bh % H) * stride_h                      # this (batch, head)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)                  # (BLOCK,) positions
    return offs, tl.arange(0, BLOCK_D), pid_bh, batch, base


@_jit
def online_softmax_step(s, ok, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """One key tile of the online softmax, in log2 units: scores ``s`` (rows, cols) kept where ``ok``,
    values ``v`` (cols, BLOCK_D); returns the rows' new running max ``m_i``, sum ``l_i`` and ``P @ V``
    ``acc``. A row with nothing allowed yet keeps ``m_i = -inf`` and adds exactly 0."""
    s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)                   # all masked so far: no NaN
    p = tl.exp2(s - m_use[:, None])                                        # masked -> exactly 0
    alpha = tl.exp2(m_i - m_use)                                           # rescale what came before
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@_jit
def recompute_tile(q, do, k, v, ok, lse2, delta, qk_scale, PRECISION: tl.constexpr):
    """``P`` and ``dS`` of a (rows, cols) tile of pairs, recomputed from the rows' saved statistics:
    ``P = exp2(s - lse2)`` where ``ok`` (exactly 0 on an empty row, whose ``lse2`` is +inf) and
    ``dS = P * (dO V^T - delta)``, ``delta = rowsum(dO * O)``."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale       # (rows, cols), log2 units
    p = tl.where(ok, tl.exp2(s - lse2[:, None]), 0.0)                      # recomputed P
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)                # dO V^T
    return p, p * (dp - delta[:, None])                                    # P, dS


@_jit
def band_key_range(pid_m, window, T, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys ``lo .. hi-1`` the query tile ``pid_m`` may read in its band: queries ``m0 .. m0 + BLOCK_M - 1``
    read ``m0 - w .. m0 + BLOCK_M - 1 + w`` (only up to ``m0 + BLOCK_M - 1`` when causal); ``lo`` is
    rounded down to a key tile."""
    m0 = pid_m * BLOCK_M
    lo = tl.maximum(m0 - window, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum(m0 + BLOCK_M, T)
    else:
        hi = tl.minimum(m0 + BLOCK_M + window, T)
    return lo, hi


@_jit
def in_window(offs_m, offs_n, window, CAUSAL: tl.constexpr):
    """(rows, cols) bool: key ``j`` in query ``i``'s window, ``|i - j| <= w`` (``0 <= i - j <= w`` when causal)."""
    gap = offs_m[:, None] - offs_n[None, :]                                # i - j
    if CAUSAL:
        return (gap >= 0) & (gap <= window)
    return (gap >= -window) & (gap <= window)


@_jit
def outside_window(offs_m, g_pos, window, CAUSAL: tl.constexpr):
    """(rows, BLOCK_G) bool: a global key the global pass counts, outside the window (inside it the
    band counted it) and, when causal, not after the query."""
    gap = offs_m[:, None] - g_pos[None, :]                                 # i - j
    if CAUSAL:
        return gap > window
    return (gap > window) | (gap < -window)


@_jit
def live_rows(PAD, batch, offs, T, HAS_PAD: tl.constexpr):
    """(rows,) bool: positions ``offs`` that exist (``< T``) and are not padding in sequence ``batch``."""
    live = offs < T
    if HAS_PAD:
        live = live & (tl.load(PAD + batch * T + offs, mask=offs < T, other=1) == 0)
    return live


@_jit
def load_rows(X, base, offs, offs_d, stride_t, Dh, rows_ok):
    """(rows, BLOCK_D) tile of X at positions ``offs`` of one (batch, head); 0 where not ``rows_ok``
    or past Dh (so a padded value is 0, never ``0 * NaN``)."""
    return tl.load(X + base + offs[:, None] * stride_t + offs_d[None, :],
                   mask=rows_ok[:, None] & (offs_d[None, :] < Dh), other=0.0)


@_jit
def store_rows(X, base, offs, offs_d, stride_t, Dh, rows_ok, tile):
    """Write a (rows, BLOCK_D) ``tile`` to X at positions ``offs`` (only ``rows_ok`` and columns < Dh)."""
    tl.store(X + base + offs[:, None] * stride_t + offs_d[None, :], tile.to(X.dtype.element_ty),
             mask=rows_ok[:, None] & (offs_d[None, :] < Dh))


@_jit
def load_global_slots(GIDX, GVALID, batch, offs_g, G):
    """Positions (BLOCK_G,) of global slots ``offs_g`` of sequence ``batch`` and whether each is real."""
    g_pos = tl.load(GIDX + batch * G + offs_g, mask=offs_g < G, other=0)
    g_ok = tl.load(GVALID + batch * G + offs_g, mask=offs_g < G, other=0) != 0
    return g_pos, g_ok


@_jit
def load_row_stats(LSE2, DELTA, pid_bh, offs_m, T):
    """Saved log-sum-exp (log2 units; +inf past T, so P = 0 there) and ``D = rowsum(dO * O)`` of rows offs_m."""
    lse2 = tl.load(LSE2 + pid_bh * T + offs_m, mask=offs_m < T, other=float("inf"))
    delta = tl.load(DELTA + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    return lse2, delta


@_jit
def load_key_tile(K, V, PAD, base, batch, start, offs_d, stride_t, T, Dh,
                  HAS_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key tile ``start .. start + BLOCK_N - 1`` of one (batch, head): its positions, which of them
    are live (exist, unpadded), and its k, v (BLOCK_N, BLOCK_D), zero where not live."""
    offs_n = start + tl.arange(0, BLOCK_N)
    k_live = live_rows(PAD, batch, offs_n, T, HAS_PAD)
    k = load_rows(K, base, offs_n, offs_d, stride_t, Dh, k_live)
    v = load_rows(V, base, offs_n, offs_d, stride_t, Dh, k_live)
    return offs_n, k_live, k, v
