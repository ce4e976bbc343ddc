"""The one door: ``attention_call`` checks once, the implementations run the validated call.

* Each argument is validated once per call: during one ``hybrid_attention`` call every validator
  of ``tutor.arguments`` runs once per argument, and each backend probe (``why_not``) once.
* Every backend's worker receives an :class:`AttentionCall` and runs it without checking again.
* A window wider than the sequence runs as ``reach = (T - 1) // dilation`` (the same pairs, bounded
  work): ``window=10**7`` at T = 10 is the same function as ``window=9``, on every implementation.
* B = 0 works: an empty output of the right shape (and empty weights and gradients).
* ``dropout_p`` 0 is no dropout; 0.999 still runs.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch

import tutor.arguments as arguments
import tutor.attention.flex as flex_mod
import tutor.attention.hybrid as hybrid_mod
from strategies import single_thread  # noqa: F401 (fixture)
from tutor.attention import (dense_attention, hybrid_attention, looped_attention, sparse_attention,
                             unfold_attention)
from tutor.attention.blocked import blocked_forward, blocked_hybrid_attention
from tutor.attention.call import AttentionCall, attention_call
from tutor.attention.flex import flex_forward, flex_hybrid_attention
from tutor.attention.looped import looped_forward
from tutor.attention.unfold import unfold_forward

pytestmark = pytest.mark.usefixtures("single_thread")

B, H, T, Dh = 2, 2, 10, 4


def _backend(name):
    def run(*args, **kwargs):
        return hybrid_attention(*args, **kwargs, backend=name)
    return run


def _sparse(impl):
    def run(*args, **kwargs):
        return sparse_attention(*args, **kwargs, impl=impl)
    return run


IMPLS = {"dense": dense_attention, "looped": looped_attention, "unfold": unfold_attention,
         "hybrid": hybrid_attention, "hybrid(blocked)": _backend("blocked"), "hybrid(flex)": _backend("flex"),
         "blocked": blocked_hybrid_attention, "flex": flex_hybrid_attention,
         **{f"sparse({i})": _sparse(i) for i in ("dense", "looped", "unfold", "hybrid")}}
DROPOUT = [name for name in IMPLS if "looped" not in name and "flex" not in name]   # take dropout_p


def inputs(B=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=g) for _ in range(3))
    gm = torch.zeros(B, T, dtype=torch.bool)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    if B:
        gm[0, 2] = True
        kpm[B - 1, -3:] = True
    return q, k, v, gm, kpm


# --------------------------------------------------------------------------- the call
def test_the_call_holds_checked_plain_values():
    q, k, v, gm, kpm = inputs()
    call = attention_call(q, k, v, np.int64(3), gm, kpm, causal=np.bool_(True), scale=np.float32(0.5),
                          dropout_p=0, dilation=torch.tensor(2))
    assert (call.window, call.reach, call.dilation, call.causal, call.scale, call.dropout_p) == (3, 3, 2, True, 0.5, 0.0)
    assert all(type(x) is t for x, t in ((call.window, int), (call.dilation, int), (call.causal, bool),
                                         (call.scale, float), (call.dropout_p, float)))
    assert call.acc == torch.float32 and call.shape == (B, H, T, Dh) and not call.needs_grad
    assert attention_call(q, k, v, 1).scale == Dh ** -0.5                  # None: 1 / sqrt(Dh)
    assert attention_call(q, k, v, 1, scale=0).scale == 0.0                 # zero and negative run, as in SDPA
    assert attention_call(q.double(), k.double(), v.double(), 1).acc == torch.float64
    with pytest.raises(FrozenInstanceError):
        call.window = 4


def test_the_call_knows_whether_autograd_needs_it():
    q, k, v, gm, kpm = inputs()
    q.requires_grad_()
    assert attention_call(q, k, v, 1).needs_grad
    with torch.no_grad():
        assert not attention_call(q, k, v, 1).needs_grad


def test_global_slots_are_computed_once(monkeypatch):
    import tutor.attention.call as call_mod
    seen = []
    real = call_mod.global_slots

    def slots(*args):
        seen.append(1)
        return real(*args)
    monkeypatch.setattr(call_mod, "global_slots", slots)
    q, k, v, gm, kpm = inputs()
    call = attention_call(q, k, v, 1, gm, kpm)
    assert seen == []                                                      # lazily
    idx, valid = call.slots
    assert call.slots[0] is idx and seen == [1]                            # once
    assert idx.tolist() == [[2], [0]] and valid.tolist() == [[True], [False]]


# --------------------------------------------------------------------------- validated once
#: validators whose first argument is the name of the argument they check
NAMED = ("check_int", "check_flag", "check_probability", "check_bool_mask")


def _spy_on_validators(monkeypatch, where="tutor"):
    """Count every call of a ``tutor.arguments`` validator made from the modules named ``where...``
    (all of ``tutor`` by default): Counter[(fn, name)]."""
    counts = Counter()
    for fname in [n for n in arguments.__all__ if n.startswith("check_")]:
        real = getattr(arguments, fname)

        def spy(*args, _real=real, _fname=fname, **kwargs):
            label = args[0] if _fname in NAMED else ""
            counts[(_fname, label)] += 1
            return _real(*args, **kwargs)
        for module in [m for name, m in sys.modules.items() if name.startswith(where) and m is not None]:
            if getattr(module, fname, None) is real:
                monkeypatch.setattr(module, fname, spy)
    return counts


def _spy_on_probes(monkeypatch):
    counts = Counter()
    for name, backend in list(hybrid_mod.BACKENDS.items()):
        def probe(*args, _real=backend.why_not, _name=name):
            counts[_name] += 1
            return _real(*args)
        monkeypatch.setitem(hybrid_mod.BACKENDS, name, hybrid_mod.Backend(name, backend.fn, probe, backend.summary,
                                                                           backend.features))
    return counts


@pytest.mark.parametrize("backend", ["auto", "blocked"])
@pytest.mark.parametrize("grad", [False, True])
def test_one_hybrid_attention_call_validates_each_argument_once(monkeypatch, backend, grad):
    q, k, v, gm, kpm = inputs()
    q.requires_grad_(grad)
    counts = _spy_on_validators(monkeypatch)
    probes = _spy_on_probes(monkeypatch)
    out = hybrid_attention(q, k, v, 3, gm, kpm, causal=True, scale=0.5, dilation=2, backend=backend)
    assert out.shape == q.shape
    assert counts and all(n == 1 for n in counts.values()), counts
    for argument in ("q", "window", "dilation", "causal", "return_weights", "dropout_p", "global_mask",
                     "key_padding_mask"):
        assert any(argument in label or (fname == f"check_{argument}") or (argument == "q" and fname == "check_qkv")
                   for fname, label in counts), (argument, counts)
    assert dict(probes) == {"blocked": 1}                                  # CPU: blocked is the only candidate


@pytest.mark.parametrize("worker", [blocked_forward, unfold_forward, looped_forward])
def test_the_workers_run_the_call_without_checking_again(monkeypatch, worker):
    q, k, v, gm, kpm = inputs()
    call = attention_call(q, k, v, 3, gm, kpm, causal=True, return_weights=True)
    counts = _spy_on_validators(monkeypatch)
    out, weights = worker(call)
    assert not counts, counts
    want, want_w = dense_attention(q, k, v, 3, gm, kpm, causal=True, return_weights=True)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, want_w, atol=1e-5, rtol=1e-5)


def test_dense_and_flex_check_nothing_again(monkeypatch):
    """dense materializes its mask and flex builds its block mask's predicate (on a plan-cache miss)
    from ``tutor.masks.hybrid_rule``, the rule of arguments already checked: no validator of
    ``tutor`` runs again behind the door, in ``tutor.masks`` neither."""
    q, k, v, gm, kpm = inputs()
    call = attention_call(q, k, v, 3, gm, kpm, causal=True, dilation=2)
    counts = _spy_on_validators(monkeypatch)
    monkeypatch.setattr(flex_mod, "compiled_flex", lambda: lambda q, k, v, block_mask, scale: torch.zeros_like(q))
    from tutor.attention.dense import dense_forward
    with torch.no_grad():
        dense_forward(call)
        flex_forward(call)
    assert not counts, counts


@pytest.mark.parametrize("name", ["blocked", "flex", "triton"])
def test_every_backend_receives_the_validated_call(monkeypatch, name):
    """hybrid_attention hands the backend's worker the AttentionCall it built (probes faked to 'can run')."""
    got = []
    old = hybrid_mod.BACKENDS[name]
    monkeypatch.setitem(hybrid_mod.BACKENDS, name, hybrid_mod.Backend(
        name, lambda call: got.append(call) or torch.zeros_like(call.q), lambda *a: None, old.summary, old.features))
    q, k, v, gm, kpm = inputs()
    hybrid_attention(q, k, v, np.int64(10 ** 7), gm, kpm, causal=True, scale=0, backend=name)
    (call,) = got
    assert isinstance(call, AttentionCall) and call.q is q and call.global_mask is gm
    assert (call.window, call.reach, call.causal, call.scale) == (10 ** 7, T - 1, True, 0.0)


def test_flex_runs_the_call_with_the_clamped_window(monkeypatch):
    """flex plans with ``call.reach`` (its kernel is faked: no compiling here)."""
    seen = []
    real_plan = flex_mod.flex_plan

    def plan(B_, T_, window, *args, **kwargs):
        seen.append(window)
        return real_plan(B_, T_, window, *args, **kwargs)

    monkeypatch.setattr(flex_mod, "flex_plan", plan)
    monkeypatch.setattr(flex_mod, "compiled_flex", lambda: lambda q, k, v, block_mask, scale: torch.zeros_like(q))
    monkeypatch.setattr(flex_mod, "flex_why_not", lambda *a: None)
    q, k, v, gm, kpm = inputs()
    with torch.no_grad():
        out = flex_hybrid_attention(q, k, v, 10 ** 7, gm, kpm)
        out2 = flex_forward(attention_call(q, k, v, 10 ** 7, gm, kpm))
    assert seen == [T - 1, T - 1] and out.shape == out2.shape == q.shape


# --------------------------------------------------------------------------- the window clamp
@pytest.mark.parametrize("window, dilation, T_, want", [(10 ** 7, 1, 10, 9), (9, 1, 10, 9), (3, 1, 10, 3),
                                                         (10 ** 7, 3, 10, 3), (10 ** 7, 20, 10, 0),
                                                         (5, 1, 1, 0), (0, 1, 1, 0)])
def test_reach_is_the_window_clamped_to_the_sequence(window, dilation, T_, want):
    q = torch.zeros(1, 1, T_, 2)
    call = attention_call(q, q, q, window, dilation=dilation)
    assert call.reach == want and call.window == window                    # what was asked stays visible


@pytest.mark.parametrize("impl", [name for name in IMPLS if "flex" not in name])
@pytest.mark.parametrize("causal", [False, True])
def test_huge_window_is_the_window_T_minus_1(impl, causal):
    """Without the clamp unfold and blocked would build (2 * 10**7 + 1)-wide windows here."""
    q, k, v, gm, kpm = inputs()
    want = dense_attention(q, k, v, T - 1, gm, kpm, causal=causal)
    got = IMPLS[impl](q, k, v, 10 ** 7, gm, kpm, causal=causal)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert torch.equal(IMPLS[impl](q, k, v, 10 ** 7, gm, kpm, causal=causal),
                       IMPLS[impl](q, k, v, T - 1, gm, kpm, causal=causal))


def test_dilated_huge_window_equals_dense():
    q, k, v, gm, kpm = inputs()
    for impl in (dense_attention, _backend("blocked")):
        got = impl(q, k, v, 10 ** 7, gm, kpm, dilation=3)
        torch.testing.assert_close(got, dense_attention(q, k, v, 3, gm, kpm, dilation=3), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- dropout_p at its bounds
@pytest.mark.parametrize("impl", DROPOUT)
def test_dropout_p_boundaries_are_accepted(impl):
    q, k, v, gm, kpm = inputs()
    assert torch.equal(IMPLS[impl](q, k, v, 2, gm, kpm, dropout_p=0), IMPLS[impl](q, k, v, 2, gm, kpm))
    out = IMPLS[impl](q, k, v, 2, gm, kpm, dropout_p=0.999)
    assert out.shape == q.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------- an empty batch
@pytest.mark.parametrize("impl", list(IMPLS))
def test_empty_batch_gives_an_empty_output(impl):
    q, k, v, gm, kpm = inputs(B=0)
    with torch.no_grad():
        out = IMPLS[impl](q, k, v, 2, gm, kpm)
    assert out.shape == (0, H, T, Dh) and out.dtype == q.dtype


@pytest.mark.parametrize("impl", [name for name in IMPLS if "flex" not in name])
def test_empty_batch_weights_and_gradients(impl):
    q, k, v, gm, kpm = inputs(B=0)
    out, w = IMPLS[impl](q, k, v, 2, gm, kpm, return_weights=True)
    assert out.shape == (0, H, T, Dh) and w.shape == (0, H, T, T)
    if "looped" in impl:
        return                                                  # forward only
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    IMPLS[impl](q, k, v, 2, gm, kpm).sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
