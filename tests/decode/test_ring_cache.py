"""RingKVCache: the slot arithmetic, exactly the keys the newest query may read, fixed memory.

The cache is checked against the rule written out by hand (``0 <= i - j <= w`` or ``j < sinks``),
for one token at a time and for chunks of every size, including chunks longer than the ring.
"""
from __future__ import annotations

import pytest
import torch

from strategies import single_thread  # noqa: F401 (fixture)
from tutor.decode import GrowingKVCache, RingKVCache, ring_slot

pytestmark = pytest.mark.usefixtures("single_thread")

B, HKV, DH = 2, 2, 4


def keys_for(positions):
    """Keys and values that carry their position, so a slot's content names where it came from."""
    p = torch.as_tensor(list(positions), dtype=torch.float32)
    k = p.reshape(1, 1, -1, 1).expand(B, HKV, -1, DH).clone()             # (B, H_kv, C, Dh)
    return k, -k


def expected_held(i: int, window: int, sinks: int):
    """The positions the query at ``i`` may read, by the rule (sorted)."""
    return sorted(j for j in range(i + 1) if i - j <= window or j < sinks)


@pytest.mark.parametrize("window,sinks", [(0, 0), (1, 0), (3, 0), (3, 2), (5, 1), (2, 6)])
def test_token_by_token_holds_exactly_the_readable_keys(window, sinks):
    cache = RingKVCache(window, sinks=sinks)
    for i in range(40):
        cache.update(*keys_for([i]))
        view = cache.view()
        held = sorted(p for p in view.positions.tolist() if p >= 0)
        assert held == expected_held(i, window, sinks)
        assert view.keys.shape == (B, HKV, sinks + window + 1, DH)
        for slot, p in enumerate(view.positions.tolist()):               # every slot holds its own key
            if p >= 0:
                assert slot == ring_slot(p, window, sinks) == cache.slot(p)
                assert (view.keys[:, :, slot] == p).all() and (view.values[:, :, slot] == -p).all()
        assert view.newest == i and cache.next_position == i + 1


@pytest.mark.parametrize("chunks", [[1] * 20, [20], [7, 13], [3, 1, 9, 2, 5], [2, 18]])
@pytest.mark.parametrize("window,sinks", [(3, 0), (4, 2), (0, 1)])
def test_chunks_of_any_size_give_the_same_cache(chunks, window, sinks):
    one = RingKVCache(window, sinks=sinks)
    for i in range(20):
        one.update(*keys_for([i]))
    many, start = RingKVCache(window, sinks=sinks), 0
    for c in chunks:
        many.update(*keys_for(range(start, start + c)), positions=torch.arange(start, start + c))
        start += c
    assert torch.equal(one.positions, many.positions)
    assert torch.equal(one.keys, many.keys) and torch.equal(one.values, many.values)


def test_slot_is_position_mod_ring_size_after_the_sinks():
    assert [ring_slot(p, 3) for p in range(10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [ring_slot(p, 2, sinks=2) for p in range(9)] == [0, 1, 2 + 2, 2 + 0, 2 + 1, 2 + 2, 2 + 0, 2 + 1, 2 + 2]


def test_memory_is_fixed_once_the_ring_is_full():
    window, sinks = 8, 4
    ring, growing = RingKVCache(window, sinks=sinks), GrowingKVCache()
    sizes, grown = [], []
    for i in range(1000):
        k, v = keys_for([i])
        ring.update(k, v)
        growing.update(k, v)
        sizes.append((ring.numel, ring.nbytes))
        grown.append(growing.numel)
    assert len(set(sizes)) == 1                                           # allocated once, at the first token
    assert sizes[0][0] == 2 * B * HKV * (sinks + window + 1) * DH + (sinks + window + 1)
    assert grown[-1] == 1000 * (2 * B * HKV * DH + 1) and grown == sorted(grown)


def test_growing_cache_holds_every_key_in_order():
    cache = GrowingKVCache()
    cache.update(*keys_for(range(5)))
    cache.update(*keys_for([5]))
    view = cache.view()
    assert view.positions.tolist() == list(range(6)) and view.window is None
    assert (view.keys[0, 0, :, 0] == torch.arange(6.0)).all()


def test_in_cache_positions_are_ranks_by_position():
    cache = RingKVCache(3, sinks=2)
    cache.update(*keys_for(range(11)))                                    # ring wrapped: slots out of order
    view = cache.view()
    ranks = view.in_cache_positions()
    order = sorted(range(len(ranks)), key=lambda s: view.positions[s].item())
    assert [ranks[s].item() for s in order] == list(range(len(ranks)))
    assert view.positions.tolist() != sorted(view.positions.tolist())     # the slot order is not the order


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,kwargs,error,match", [
    ((-1,), {}, ValueError, "window"),
    ((2,), {"sinks": -1}, ValueError, "sinks"),
    ((2.0,), {}, TypeError, "window"),
    ((True,), {}, TypeError, "window"),
    (("3",), {}, TypeError, "window"),
    ((None,), {}, TypeError, "window"),
    ((2,), {"sinks": 1.5}, TypeError, "sinks"),
])
def test_bad_window_or_sinks(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        RingKVCache(*args, **kwargs)


@pytest.mark.parametrize("make", [lambda: RingKVCache(3, sinks=1), GrowingKVCache])
def test_positions_out_of_order_or_twice(make):
    cache = make()
    cache.update(*keys_for(range(4)))
    with pytest.raises(ValueError, match=r"positions .*expected 4\.\.4.* got \[3\]"):
        cache.update(*keys_for([3]), positions=torch.tensor([3]))        # fed twice
    with pytest.raises(ValueError, match=r"positions .*got \[6\]"):
        cache.update(*keys_for([6]), positions=torch.tensor([6]))        # skips 4 and 5
    with pytest.raises(ValueError, match=r"positions .*got \[5, 4\]"):
        cache.update(*keys_for([5, 4]), positions=torch.tensor([5, 4]))  # out of order
    with pytest.raises(ValueError, match=r"positions must have shape \(C,\) = \(2,\)"):
        cache.update(*keys_for([4, 5]), positions=torch.tensor([4]))
    with pytest.raises(TypeError, match="positions"):
        cache.update(*keys_for([4]), positions=torch.tensor([4.0]))
    with pytest.raises(ValueError, match=r"positions .*got \[5\]"):
        cache.update(*keys_for([5]), positions=5)                       # an int is the first position
    with pytest.raises(TypeError, match="positions"):
        cache.update(*keys_for([4]), positions=[True])
    cache.update(*keys_for([4, 5]), positions=range(4, 6))               # a range is fine
    cache.update(*keys_for([6]), positions=[6])                          # and a list
    cache.update(*keys_for([7, 8]), positions=7)                         # and the first position
    assert cache.next_position == 9


@pytest.mark.parametrize("make", [lambda: RingKVCache(3), GrowingKVCache])
def test_bad_shapes_name_the_argument(make):
    cache = make()
    k, v = keys_for([0])
    with pytest.raises(ValueError, match=r"^k must have shape \(B, H_kv, C, Dh\), got 3-D"):
        cache.update(k[0], v)
    with pytest.raises(ValueError, match=r"^v must have the same"):
        cache.update(k, v[:, :1])
    with pytest.raises(TypeError, match=r"^k must be a torch.Tensor"):
        cache.update([0.0], v)
    with pytest.raises(TypeError, match=r"^v must be float32, float16 or bfloat16"):
        cache.update(k, v.long())
    cache.update(k, v)
    k1, v1 = keys_for([1])
    with pytest.raises(ValueError, match=r"^k must continue the cache's \(B, H_kv, ., Dh\)"):
        cache.update(k1[..., :2], v1[..., :2])                          # Dh changed
    with pytest.raises(ValueError, match=r"^k must continue"):
        cache.update(k1.double(), v1.double())                          # dtype changed
    assert cache.next_position == 1                                      # nothing was stored
