"""tutor.bench.decode: the ring's KV memory is flat in the tokens generated, transformers' DynamicCache
with the model's config is flat too (its sliding layers keep sliding_window - 1 keys), one built
without the config grows by one key per layer and token; rows and bad input."""
from __future__ import annotations

import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.bench.decode import CACHES, decode_benchmark, format_decode_rows, main

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = dict(window=8, layers=2, dim=16, heads=4, kv_heads=2, prompt=4, threads=None)


def by_cache(rows):
    out = {}
    for r in rows:
        out.setdefault(r["cache"], []).append(r)
    return out


def test_ring_memory_is_flat_and_rows_are_complete():
    rows = decode_benchmark([5, 20, 40], caches=["ring"], **SMALL)
    assert [r["tokens"] for r in rows] == [5, 20, 40]
    assert len({r["kv_bytes"] for r in rows}) == 1                        # flat, even before the ring is full
    assert all(r["tokens_per_s"] > 0 for r in rows)
    # keys + values (1, 2, 8 + 1, 4) float32 each, plus the (9,) long positions, per layer
    assert rows[0]["kv_bytes"] == 2 * (2 * 2 * 9 * 4 * 4 + 9 * 8)
    assert "ring" in format_decode_rows(rows)


def test_transformers_caches_flat_with_the_config_growing_without():
    pytest.importorskip("transformers")
    rows = by_cache(decode_benchmark([10, 30], caches=["hf-sliding", "hf-sliding-tutor", "hf-full"], **SMALL))
    for kind in ("hf-sliding", "hf-sliding-tutor"):
        sizes = [r["kv_bytes"] for r in rows[kind]]
        assert sizes[0] == sizes[1] == 2 * 2 * (2 * 8 * 4 * 4)             # sliding_window - 1 = 8 keys
    full = [r["kv_bytes"] for r in rows["hf-full"]]
    assert full[1] - full[0] == 20 * 2 * 2 * (2 * 4 * 4)                   # one key per layer and token


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="tokens must be positive"):
        decode_benchmark([0, 4], caches=["ring"], **SMALL)
    with pytest.raises(ValueError, match="caches must be among"):
        decode_benchmark([4], caches=["static"], **SMALL)
    assert main(["--tokens", "0", "--caches", "ring"]) == 2
    assert set(CACHES) == {"ring", "hf-sliding", "hf-sliding-tutor", "hf-full"}


def test_the_benchmark_leaves_gradients_on():
    """Its streams are generators: one suspended inside ``torch.no_grad()`` would switch gradients off
    in the caller (a notebook, the test session) for good."""
    assert torch.is_grad_enabled()
    decode_benchmark(tokens=(2, 3), window=2, layers=1, dim=8, heads=2, kv_heads=1, prompt=3, caches=("ring",))
    assert torch.is_grad_enabled()
