"""The pattern zoo (tutor.patterns) and the hybrid rule's ``dilation`` / ``pattern`` options.

Every factory is compared with a plain-Python loop over (b, i, j) written from its definition,
on a broadcast grid (create_mask) and element by element under nested ``torch.vmap`` (the way
FlexAttention calls a mask_mod). Seeds must reproduce masks; the hybrid rule with the new
options is checked against brute force, and ``dense_attention`` against a float64 masked softmax.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import (as_lists, global_masks, padding_masks, random_qkv, reference_attention,  # noqa: F401
                        single_thread)
from tutor import masks, patterns
from tutor.attention import dense_attention
from tutor.costs import count_allowed
from tutor.masks import and_masks, create_mask, generate_causal, generate_dilated_window, hybrid_mask, or_masks

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def grid(B: int, T: int, rule) -> torch.Tensor:
    """Brute force: a plain-Python ``rule(b, i, j) -> bool`` on every (b, i, j): (B, T, T) bool."""
    return torch.tensor([[[bool(rule(b, i, j)) for j in range(T)] for i in range(T)] for b in range(B)],
                        dtype=torch.bool).reshape(B, T, T)


def vmapped(mod, B: int, T: int) -> torch.Tensor:
    """Evaluate ``mod`` one scalar (b, h, q, kv) at a time under nested vmap, like FlexAttention."""
    fn = mod
    for dim in (3, 2, 1, 0):          # innermost kv, then q, h, b
        in_dims = tuple(0 if d == dim else None for d in range(4))
        fn = torch.vmap(fn, in_dims=in_dims)
    ar = torch.arange
    return fn(ar(B), ar(1), ar(T), ar(T))[:, 0]                           # (B, T, T)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.bool and tuple(got.shape) == tuple(want.shape), (got.dtype, got.shape, want.shape)
    bad = (got != want).nonzero().tolist()
    assert not bad, f"masks differ at (b, i, j) = {bad[:10]}"


def check_mod(mod, B: int, T: int, rule) -> None:
    want = grid(B, T, rule)
    assert_same(create_mask(mod, B, T), want)
    assert_same(vmapped(mod, B, T), want)


# --------------------------------------------------------------------------- factories vs loops
@SETTINGS
@given(T=st.integers(1, 20), window=st.integers(0, 6), dilation=st.integers(1, 5))
def test_dilated_window(T, window, dilation):
    mod = generate_dilated_window(window, dilation)
    check_mod(mod, 1, T, lambda b, i, j: abs(i - j) <= window * dilation and (i - j) % dilation == 0)
    if dilation == 1:
        assert mod.__name__ == f"local_w{window}"
    else:
        assert mod.__name__ == f"dilated_w{window}_d{dilation}"
    # exactly 2w + 1 keys for a query far from both edges
    if T > 2 * window * dilation:
        row = create_mask(mod, 1, T)[0, window * dilation]
        assert int(row.sum()) == 2 * window + 1


@SETTINGS
@given(T=st.integers(1, 20), block=st.integers(1, 6), data=st.data())
def test_block_sparse_block_diagonal_strided_fixed(T, block, data):
    nb = -(-T // block)
    rnd = data.draw(st.randoms(use_true_random=False))
    layout = torch.tensor([[rnd.random() < 0.4 for _ in range(nb)] for _ in range(nb)], dtype=torch.bool)
    lay = layout.tolist()
    mod = patterns.generate_block_sparse(block, layout)
    check_mod(mod, 1, T, lambda b, i, j: lay[i // block][j // block])
    assert mod.max_len == nb * block
    check_mod(patterns.generate_block_diagonal(block), 1, T, lambda b, i, j: i // block == j // block)
    check_mod(patterns.generate_strided(block), 1, T, lambda b, i, j: (i - j) % block == 0)
    c = data.draw(st.integers(1, block))
    check_mod(patterns.generate_fixed_summary(block, c), 1, T, lambda b, i, j: j % block >= block - c)


def test_block_sparse_copies_its_layout():
    layout = torch.eye(3, dtype=torch.bool)
    mod = patterns.generate_block_sparse(2, layout)
    layout.fill_(True)                                   # a later edit must not change the mask
    assert_same(create_mask(mod, 1, 6), grid(1, 6, lambda b, i, j: i // 2 == j // 2))


@SETTINGS
@given(T=st.integers(1, 40), block=st.integers(1, 8), data=st.data())
def test_bigbird_random_table_and_mask(T, block, data):
    nb = -(-T // block)
    r = data.draw(st.integers(0, nb - 1))
    seed = data.draw(st.integers(0, 2 ** 31 - 1))
    table = patterns.bigbird_random_table(T, block, r, seed)
    assert table.dtype == torch.long and tuple(table.shape) == (nb, r)
    for n, row in enumerate(table.tolist()):
        assert row == sorted(set(row)) and n not in row and all(0 <= x < nb for x in row), (n, row)
    assert torch.equal(table, patterns.bigbird_random_table(T, block, r, seed))    # seeded
    mod = patterns.generate_bigbird_random(T, block, r, seed)
    assert torch.equal(mod.table, table) and mod.__name__ == f"bigbird_random_r{r}_b{block}"
    rows = table.tolist()
    check_mod(mod, 1, T, lambda b, i, j: j // block in rows[i // block])


def test_bigbird_seeds_differ_and_counts():
    tables = {tuple(patterns.bigbird_random_table(64, 4, 3, seed).flatten().tolist()) for seed in range(5)}
    assert len(tables) == 5                               # different seeds, different draws
    mask = create_mask(patterns.generate_bigbird_random(64, 4, 3, 0), 1, 64)
    assert int(mask.sum()) == 16 * 4 * 3 * 4              # blocks x rows per block x r x keys per block


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 16), D=st.integers(1, 5), n=st.sampled_from([2, 4, 6, 8]),
       seed=st.integers(0, 1000))
def test_lsh_buckets_and_mask(B, T, D, n, seed):
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))
    buckets = patterns.lsh_buckets(x, n, seed)
    assert buckets.dtype == torch.long and tuple(buckets.shape) == (B, T)
    assert int(buckets.min()) >= 0 and int(buckets.max()) < n
    assert torch.equal(buckets, patterns.lsh_buckets(x.clone(), n, seed))            # seeded
    assert torch.equal(buckets, patterns.lsh_buckets(3.5 * x, n, seed))              # angular: norm-free
    assert torch.equal(patterns.lsh_buckets(-x, n, seed), (buckets + n // 2) % n)    # opposite bucket
    mod = patterns.generate_lsh_buckets(x, n, seed)
    assert (mod.batch_size, mod.max_len) == (B, T) and torch.equal(mod.buckets, buckets)
    bk = buckets.tolist()
    check_mod(mod, B, T, lambda b, i, j: bk[b][i] == bk[b][j])


def test_lsh_groups_similar_vectors():
    base = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))            # 4 directions
    x = base.repeat_interleave(3, 0)[None] * torch.arange(1, 13.0)[None, :, None]    # (1, 12, 8)
    buckets = patterns.lsh_buckets(x, 8, seed=1)[0].view(4, 3)
    assert (buckets == buckets[:, :1]).all()              # copies of a direction share its bucket


@pytest.mark.parametrize("max_elements", [1, 7, 1 << 24])
def test_count_allowed_walks_row_blocks_of_any_pattern(max_elements):
    T = 23
    x = torch.randn(2, T, 3, generator=torch.Generator().manual_seed(0))
    for mod, B in ((generate_dilated_window(2, 3), 1), (patterns.generate_bigbird_random(T, 4, 2, 1), 1),
                   (and_masks(patterns.generate_lsh_buckets(x, 4, 0), generate_causal()), 2)):
        assert count_allowed(mod, T, B, max_elements=max_elements) == int(create_mask(mod, B, T).sum())


# --------------------------------------------------------------------------- composition
@SETTINGS
@given(T=st.integers(2, 24), w=st.integers(0, 3), d=st.integers(1, 3), block=st.integers(1, 5), data=st.data())
def test_zoo_composes_with_and_or(T, w, d, block, data):
    nb = -(-T // block)
    r = data.draw(st.integers(0, nb - 1))
    rnd_mod = patterns.generate_bigbird_random(T, block, r, seed=7)
    rows = rnd_mod.table.tolist()
    x = torch.randn(2, T, 3, generator=torch.Generator().manual_seed(T))
    lsh = patterns.generate_lsh_buckets(x, 4, seed=3)
    bk = lsh.buckets.tolist()
    dil = generate_dilated_window(w, d)

    def local(i, j):
        return abs(i - j) <= w * d and (i - j) % d == 0
    both = or_masks(dil, rnd_mod)
    check_mod(both, 1, T, lambda b, i, j: local(i, j) or j // block in rows[i // block])
    assert both.__name__ == f"{dil.__name__} | {rnd_mod.__name__}" and both.max_len >= T
    causal_lsh = and_masks(lsh, generate_causal())
    assert causal_lsh.batch_size == 2
    check_mod(causal_lsh, 2, T, lambda b, i, j: bk[b][i] == bk[b][j] and j <= i)


# --------------------------------------------------------------------------- the hybrid rule
def brute_hybrid(T, w, gm, pm, causal, d, extra, B):
    g, p = as_lists(gm), as_lists(pm)

    def rule(b, i, j):
        ok = (abs(i - j) <= w * d and (i - j) % d == 0) or extra(b, i, j) \
            or (g is not None and (g[b][i] or g[b][j]))
        if causal and j > i:
            ok = False
        if p is not None and (p[b][i] or p[b][j]):
            ok = False
        return ok
    return grid(B, T, rule)


PATTERN_KINDS = ("none", "bigbird", "block_diagonal", "lsh")


def make_pattern(kind: str, B: int, T: int, seed: int):
    """(pattern mod or None, plain-Python predicate extra(b, i, j))."""
    if kind == "none":
        return None, lambda b, i, j: False
    if kind == "bigbird":
        nb = -(-T // 3)
        mod = patterns.generate_bigbird_random(T, 3, min(2, nb - 1), seed)
        rows = mod.table.tolist()
        return mod, lambda b, i, j: j // 3 in rows[i // 3]
    if kind == "block_diagonal":
        return patterns.generate_block_diagonal(4), lambda b, i, j: i // 4 == j // 4
    x = torch.randn(B, T, 4, generator=torch.Generator().manual_seed(seed))
    mod = patterns.generate_lsh_buckets(x, 4, seed)
    bk = mod.buckets.tolist()
    return mod, lambda b, i, j: bk[b][i] == bk[b][j]


@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 20), w=st.integers(0, 4), d=st.integers(1, 4),
       causal=st.booleans(), kind=st.sampled_from(PATTERN_KINDS), data=st.data())
def test_hybrid_mask_with_dilation_and_pattern(B, T, w, d, causal, kind, data):
    gm = data.draw(global_masks(B, T))
    pm = data.draw(padding_masks(B, T))
    pattern, extra = make_pattern(kind, B, T, seed=data.draw(st.integers(0, 99)))
    got = hybrid_mask(T, w, gm, pm, causal=causal, dilation=d, pattern=pattern)
    Bm = B if (gm is not None or pm is not None or kind == "lsh") else 1
    assert_same(got, brute_hybrid(T, w, gm, pm, causal, d, extra, Bm))


def test_defaults_keep_todays_rule():
    gm = torch.tensor([[False, True, False, False, False, False, False]])
    assert torch.equal(hybrid_mask(7, 1, gm, dilation=1, pattern=None), hybrid_mask(7, 1, gm))
    assert masks.hybrid_mask_mod(2).__name__ == "local_w2"
    assert masks.hybrid_mask_mod(2, dilation=3).__name__ == "dilated_w2_d3"


def test_pattern_is_head_independent():
    seen = []

    def spy(batch, head, q_idx, kv_idx):
        seen.append(head)
        return (q_idx + head) == kv_idx                   # would differ per head if head leaked through
    mod = masks.hybrid_mask_mod(0, pattern=spy)
    out = mod(torch.tensor(0), torch.tensor(3), torch.tensor(2), torch.tensor(2))
    assert bool(out) and all(int(h) == 0 for h in seen)


@SETTINGS
@given(B=st.integers(1, 2), H=st.integers(1, 2), T=st.integers(1, 18), w=st.integers(0, 3), d=st.integers(1, 3),
       causal=st.booleans(), kind=st.sampled_from(PATTERN_KINDS), seed=st.integers(0, 2 ** 20))
def test_dense_attention_with_dilation_and_pattern(B, H, T, w, d, causal, kind, seed):
    q, k, v = random_qkv(B, H, T, 4, seed)
    gm = torch.zeros(B, T, dtype=torch.bool)
    gm[:, seed % T] = True
    pattern, extra = make_pattern(kind, B, T, seed)
    allowed = brute_hybrid(T, w, gm, None, causal, d, extra, B)           # (B, T, T)
    want_out, want_w = reference_attention(q, k, v, allowed)
    out, weights = dense_attention(q, k, v, w, gm, causal=causal, dilation=d, pattern=pattern,
                                   return_weights=True)
    torch.testing.assert_close(out.double(), want_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights.double(), want_w, atol=1e-6, rtol=1e-5)


def test_sparse_attention_passes_the_options_on():
    from tutor.attention import sparse_attention
    q, k, v = random_qkv(1, 2, 12, 4, seed=5)
    mod = patterns.generate_bigbird_random(12, 3, 1, seed=0)
    want = dense_attention(q, k, v, 1, dilation=2, pattern=mod)
    torch.testing.assert_close(sparse_attention(q, k, v, 1, impl="dense", dilation=2, pattern=mod), want)
    assert not torch.allclose(want, dense_attention(q, k, v, 1))          # the options do something


# --------------------------------------------------------------------------- bad input
Q = torch.zeros(2, 1, 6, 4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: generate_dilated_window(2, 0), ValueError, r"dilation.*0"),
    (lambda: generate_dilated_window(2, 1.5), TypeError, r"dilation.*float"),
    (lambda: generate_dilated_window(-1, 2), ValueError, r"window.*-1"),
    (lambda: hybrid_mask(6, 1, dilation=True), TypeError, r"dilation.*bool"),
    (lambda: hybrid_mask(6, 1, dilation=-2), ValueError, r"dilation.*-2"),
    (lambda: hybrid_mask(6, 1, pattern="block"), TypeError, r"pattern.*str"),
    (lambda: hybrid_mask(6, 1, pattern=patterns.generate_bigbird_random(4, 2, 1, 0)), ValueError,
     r"pattern.*< 4.*T=6"),
    (lambda: hybrid_mask(6, 1, torch.zeros(3, 6, dtype=torch.bool),
                         pattern=patterns.generate_lsh_buckets(torch.randn(2, 6, 2), 2, 0)), ValueError,
     r"pattern.*B=2.*B=3"),
    (lambda: dense_attention(Q, Q, Q, 1, pattern=patterns.generate_lsh_buckets(torch.randn(3, 6, 2), 2, 0)),
     ValueError, r"pattern.*B=3.*\(2, 1, 6, 4\)"),
    (lambda: dense_attention(Q, Q, Q, 1, dilation=0), ValueError, r"dilation"),
    (lambda: patterns.generate_block_sparse(2, torch.ones(3, 3)), TypeError, r"layout.*float32"),
    (lambda: patterns.generate_block_sparse(0, torch.ones(3, 3, dtype=torch.bool)), ValueError, r"block_size"),
    (lambda: patterns.bigbird_random_table(8, 4, 2, 0), ValueError, r"num_random_blocks.*<= .*1"),
    (lambda: patterns.bigbird_random_table(8, 4, -1, 0), ValueError, r"num_random_blocks"),
    (lambda: patterns.generate_fixed_summary(4, 5), ValueError, r"summary.*block_size"),
    (lambda: patterns.lsh_buckets(torch.randn(2, 6, 3), 3, 0), ValueError, r"n_buckets.*even"),
    (lambda: patterns.lsh_buckets(torch.randn(6, 3), 4, 0), TypeError, r"x.*\(B, T, D\)"),
    (lambda: patterns.lsh_buckets(torch.ones(1, 6, 3, dtype=torch.long), 4, 0), TypeError, r"x.*int64"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_one_mask_floor_and_no_circle():
    """masks imports nothing of ours but the argument validators and no longer re-exports the zoo;
    patterns builds on masks' public names."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(masks))
    ours = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("tutor"))]
    assert [(n.level, n.module) for n in ours] == [(1, "arguments")]
    assert not hasattr(masks, "generate_block_sparse") and not hasattr(masks, "__getattr__")
    used = {a.name for n in ast.walk(ast.parse(inspect.getsource(patterns)))
            if isinstance(n, ast.ImportFrom) and n.module == "masks" for a in n.names}
    assert used and all(not name.startswith("_") and name in masks.__all__ for name in used)


def test_predicates_take_batch_head_q_idx_kv_idx():
    """docs/notation.md: ``b`` is the block size, never the batch index of a predicate."""
    import inspect
    mods = [masks.generate_local_window(1), masks.generate_causal(), masks.generate_dilated_window(1, 2),
            masks.generate_global(torch.zeros(1, 4, dtype=torch.bool)),
            masks.generate_key_padding(torch.zeros(1, 4, dtype=torch.bool)),
            masks.and_masks(masks.generate_causal()), masks.or_masks(masks.generate_causal()),
            patterns.generate_block_sparse(2, torch.ones(2, 2, dtype=torch.bool)), patterns.generate_block_diagonal(2),
            patterns.generate_strided(2), patterns.generate_fixed_summary(2), patterns.generate_bigbird_random(8, 2, 1, 0),
            patterns.generate_lsh_buckets(torch.randn(1, 4, 2), 2, 0)]
    for mod in mods:
        assert list(inspect.signature(mod).parameters) == ["batch", "head", "q_idx", "kv_idx"], mod.__name__