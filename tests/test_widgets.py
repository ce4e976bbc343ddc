"""Headless tests of the explorers: pure functions in tutor.viz.explorers, glue in tutor.widgets.

No kernel, no browser: widgets are created in-process, their controls set from Python, and
the state, the HTML numbers and the PNG in the Output are checked after each change.
"""
import base64
import math

import numpy as np
import pytest
import torch

from tutor.attention import HybridSparseAttention
from tutor.attention.blocked import default_block_size
from tutor.masks import count_allowed, create_mask, hybrid_mask
from tutor.viz import explorers as ex
from tutor.widgets import (AttentionExplorer, CostExplorer, PatternExplorer, attention_explorer,
                           cost_explorer, pattern_explorer)

BENCH_HEADER = "impl,backend,device,dtype,B,H,T,Dh,window,G,time_ms,peak_mem_mb,speedup_vs_dense,max_err\n"


def png_of(widget) -> bytes:
    """The one PNG the explorer's Output holds right now."""
    (output,) = widget.out.outputs
    data = base64.b64decode(output["data"]["image/png"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def global_flags(T, positions):
    g = torch.zeros(1, T, dtype=torch.bool)
    g[0, list(positions)] = True
    return g


# ---------------------------------------------------------------- pure functions

@pytest.mark.parametrize("text, expected", [("0, 17", (0, 17)), ("17 0", (0, 17)), ("2-4,3", (2, 3, 4)),
                                            ("", ()), ("  ", ()), ("all", tuple(range(20)))])
def test_parse_positions(text, expected):
    assert ex.parse_positions(text, 20) == expected


@pytest.mark.parametrize("text", ["20", "3-1", "a", "-1", "1.5"])
def test_parse_positions_rejects_with_reason(text):
    with pytest.raises(ValueError, match="positions"):
        ex.parse_positions(text, 20)
    with pytest.raises(TypeError, match="positions"):
        ex.parse_positions([0, 1], 20)


def test_local_pair_count_hand_counts():
    # T=5, w=1: rows read 2,3,3,3,2 keys; causal: 1,2,2,2,2
    assert ex.local_pair_count(5, 1) == 13
    assert ex.local_pair_count(5, 1, causal=True) == 9
    assert ex.local_pair_count(5, 0) == 5
    assert ex.local_pair_count(5, 4) == ex.local_pair_count(5, 100) == 25
    assert ex.local_pair_count(5, 100, causal=True) == 15


@pytest.mark.parametrize("T", [1, 2, 7, 16])
@pytest.mark.parametrize("causal", [False, True])
def test_local_pair_count_matches_masks(T, causal):
    for w in range(T + 2):
        loops = sum(1 for i in range(T) for j in range(T)
                    if (0 <= i - j <= w if causal else abs(i - j) <= w))
        assert ex.local_pair_count(T, w, causal) == loops == count_allowed(hybrid_mask(T, w, causal=causal))


@pytest.mark.parametrize("T, w, g", [(9, 0, ()), (9, 2, (0,)), (12, 3, (0, 11)), (8, 20, (4,)), (6, 1, range(6))])
@pytest.mark.parametrize("causal", [False, True])
def test_pattern_mask_equals_hybrid_mask(T, w, g, causal):
    ours = ex.pattern_mask(T, w, tuple(g), causal=causal)
    assert torch.equal(ours, hybrid_mask(T, w, global_flags(T, g) if len(g) else None, causal=causal)[0])


@pytest.mark.parametrize("kwargs, name", [(dict(T=0, window=1), "T"), (dict(T=5, window=-1), "window"),
                                          (dict(T=5, window=1, block=-2), "block"),
                                          (dict(T=5, window=1, num_random=-1), "num_random"),
                                          (dict(T=5, window=1.5), "window"),
                                          (dict(T=5, window=1, global_positions=(5,)), "global_positions")])
def test_pattern_mask_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ex.pattern_mask(**kwargs)


def test_dilated_block_random_patterns():
    dil = create_mask(ex.explorer_dilated_mod(2, 3), 1, 12)[0]
    assert dil[5].nonzero().flatten().tolist() == [2, 5, 8, 11]   # 2 keys each side 3 apart, -1 cut
    assert dil[0].nonzero().flatten().tolist() == [0, 3, 6]
    assert torch.equal(create_mask(ex.explorer_dilated_mod(2, 1), 1, 9), hybrid_mask(9, 2))
    with pytest.raises(ValueError, match="dilation"):
        ex.explorer_dilated_mod(2, 0)

    blk = ex.pattern_mask(8, 0, block=4)
    assert torch.equal(blk, torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool())

    rnd = create_mask(ex.explorer_random_mod(16, 3, seed=1), 1, 16)[0]
    assert rnd.sum(dim=1).tolist() == [3] * 16                    # exactly r keys per query
    assert torch.equal(rnd, create_mask(ex.explorer_random_mod(16, 3, seed=1), 1, 16)[0])
    assert not torch.equal(rnd, create_mask(ex.explorer_random_mod(16, 3, seed=2), 1, 16)[0])
    both = ex.pattern_mask(16, 1, num_random=3, seed=1, causal=True)
    assert torch.equal(both, (hybrid_mask(16, 1)[0] | rnd) & torch.ones(16, 16).bool().tril())


def test_attention_cost_formulas():
    B, H, T, Dh = 2, 3, 128, 16
    io = 4 * B * H * T * Dh
    dense = ex.attention_cost("dense", T, 4, 2, B=B, H=H, Dh=Dh)
    assert dense == {"flops": 4 * B * H * T * T * Dh, "memory_bytes": 4 * (io + B * H * T * T)}
    unf = ex.attention_cost("unfold", T, 0, 0, B=B, H=H, Dh=Dh)  # window 0: one key per query
    assert unf["flops"] == 4 * B * H * T * Dh
    assert unf["memory_bytes"] == 4 * (io + 2 * B * H * T * Dh + B * H * T)
    b = default_block_size(16, T)                                 # query block of the blocked backend
    hyb = ex.attention_cost("hybrid", T, 16, 3, B=B, H=H, Dh=Dh)
    assert hyb["flops"] == 4 * B * H * Dh * (math.ceil(T / b) * b * (b + 32 + 3) + 3 * T)
    causal = ex.attention_cost("hybrid", T, 16, 3, B=B, H=H, Dh=Dh, causal=True)
    assert causal["flops"] == 4 * B * H * Dh * (math.ceil(T / b) * b * (b + 16 + 3) + 3 * T)
    # dense is quadratic, hybrid linear in T
    big = [ex.attention_cost(i, 1 << 14, 16, 2) for i in ex.IMPLS]
    bigger = [ex.attention_cost(i, 1 << 15, 16, 2) for i in ex.IMPLS]
    assert bigger[0]["flops"] == 4 * big[0]["flops"]
    assert bigger[2]["flops"] == pytest.approx(2 * big[2]["flops"], rel=1e-3)
    assert big[2]["memory_bytes"] < big[1]["memory_bytes"] < big[0]["memory_bytes"]
    # unfold's K/V windows (2 (2w+1) Dh per query) outgrow dense's T scores when 2 (2w+1) Dh > T
    assert ex.attention_cost("unfold", 4096, 64)["memory_bytes"] > ex.attention_cost("dense", 4096, 64)["memory_bytes"]
    with pytest.raises(ValueError, match="impl"):
        ex.attention_cost("flash", 8, 1)
    with pytest.raises(ValueError, match="G"):
        ex.attention_cost("dense", 8, 1, G=9)


def test_format_bytes():
    assert ex.format_bytes(512) == "512 B"
    assert ex.format_bytes(1536) == "1.5 KiB"
    assert ex.format_bytes(3 * 2**30) == "3.0 GiB"


def test_load_benchmarks_is_graceful(tmp_path):
    assert ex.load_benchmarks([tmp_path / "missing.csv"]) == []
    good = tmp_path / "cpu.csv"
    good.write_text(BENCH_HEADER + "hybrid,blocked,cpu,float32,1,8,1024,64,64,2,3.5,12.0,4.1,1e-6\n"
                    "dense,,cpu,float32,1,8,oops,64,64,2,3.5,12.0,1,0\n"       # no T: skipped
                    "unfold,torch,cpu,float32,1,8,2048,64,64,2,7.5,,,\n")      # dense skipped: NaN
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    rows = ex.load_benchmarks([good, tmp_path / "other.csv"])
    assert [(r["impl"], r["T"]) for r in rows] == [("hybrid", 1024.0), ("unfold", 2048.0)]
    assert math.isnan(rows[1]["peak_mem_mb"]) and rows[1]["time_ms"] == 7.5


def test_toy_attention_weights_match_the_layer_and_keep_rng():
    state = torch.get_rng_state()
    w = ex.toy_attention_weights(10, 2, (0, 7), impl="unfold", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(3)
    layer = HybridSparseAttention(32, 4, 2, impl="dense").eval()
    x = torch.randn(1, 10, 32)
    _, ref = layer(x, global_mask=global_flags(10, (0, 7)), return_weights=True)
    assert w.shape == (4, 10, 10)
    torch.testing.assert_close(w, ref[0].detach(), atol=1e-6, rtol=0)


def test_plot_attention_explorer_bars_are_the_row():
    w = ex.toy_attention_weights(12, 1, (3,), seed=0)[1]
    fig = ex.plot_attention_explorer(w, 6, 1, (3,))
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, w[6].numpy(), atol=1e-7)
    assert sum(h > 0 for h in heights) == 4                       # keys 5, 6, 7 and global 3


def test_plot_costs_overlays_matching_rows_only():
    row = {"impl": "hybrid", "device": "cpu", "T": 1024.0, "window": 64.0, "G": 2.0, "B": 1.0, "H": 1.0,
           "Dh": 64.0, "time_ms": 2.0, "peak_mem_mb": 10.0}
    labels = lambda f: [ln.get_label() for ax in f.axes for ln in ax.lines]  # noqa: E731
    with_pts = ex.plot_costs(1024, 64, 2, measured=[row])
    assert "hybrid measured (cpu)" in labels(with_pts) and "hybrid cpu ms" in labels(with_pts)
    for other in (dict(window=32), dict(G=3), dict(H=2)):            # another setting: not overlaid
        args = {"window": 64, "G": 2, **other}
        fig = ex.plot_costs(1024, args.pop("window"), args.pop("G"), measured=[row], **args)
        assert not any("measured" in lb for lb in labels(fig))


# ---------------------------------------------------------------- widgets

def test_pattern_explorer_updates_on_every_control():
    p = pattern_explorer()
    assert isinstance(p, PatternExplorer)
    T = p.T.value
    assert p.allowed_pairs == count_allowed(hybrid_mask(T, 2, global_flags(T, (0,))))
    before_png, before_text = png_of(p), p.stats.value
    p.window.value = 5
    expected = hybrid_mask(T, 5, global_flags(T, (0,)))[0]
    assert torch.equal(p.mask, expected)
    np.testing.assert_array_equal(p.figure.axes[0].images[0].get_array(), expected.numpy())
    assert f"allowed pairs: {int(expected.sum())} / {T * T}" in p.stats.value != before_text
    assert png_of(p) != before_png
    for control, value in ((p.causal, True), (p.dilation, 2), (p.num_random, 2), (p.seed, 5), (p.block, 4)):
        old = p.mask.clone()
        control.value = value
        assert not torch.equal(p.mask, old), control.description
    assert len(p.out.outputs) == 1                                # replaced, never appended


def test_global_picker_click_and_type_stay_in_sync():
    p = PatternExplorer(T=16, window=1, global_positions=())
    assert p.allowed_pairs == ex.local_pair_count(16, 1)
    p.globals_.select.value = (3, 9)                             # clicked
    assert p.globals_.text.value == "3, 9" and p.globals_.positions == (3, 9)
    assert torch.equal(p.mask, hybrid_mask(16, 1, global_flags(16, (3, 9)))[0])
    p.globals_.text.value = "0, 15"                               # typed
    assert p.globals_.select.value == (0, 15)
    assert torch.equal(p.mask, hybrid_mask(16, 1, global_flags(16, (0, 15)))[0])
    p.globals_.text.value = "0, 99"                               # invalid: reason shown, state kept
    assert "outside" in p.globals_.message.value and p.globals_.positions == (0, 15)
    p.T.value = 10                                                # 15 no longer exists
    assert p.globals_.positions == (0,) and p.mask.shape == (10, 10)
    assert [v for _, v in p.globals_.select.options] == list(range(10))


@pytest.mark.parametrize("window, globals_text, pairs", [
    (0, "", 12), (50, "", 144), (0, "all", 144), (3, "all", 144), (0, "0", 12 + 2 * 11)])
def test_pattern_explorer_extremes(window, globals_text, pairs):
    p = PatternExplorer(T=12)
    p.window.value = window
    p.globals_.text.value = globals_text
    assert p.allowed_pairs == pairs
    assert f"allowed pairs: {pairs} / 144" in p.stats.value
    assert set(p.memory) == set(ex.IMPLS) and all(m > 0 for m in p.memory.values())


def test_attention_explorer_row_is_the_layers_row():
    a = attention_explorer()
    assert isinstance(a, AttentionExplorer)
    T, g = a.seq_len, (0,)
    torch.manual_seed(a.seed)
    layer = HybridSparseAttention(a.dim, a.num_heads, 2).eval()
    _, ref = layer(torch.randn(1, T, a.dim), global_mask=global_flags(T, g), return_weights=True)
    ref = ref[0].detach()                                         # (H, T, T)
    np.testing.assert_allclose(a.row, ref[0, a.query.value].numpy(), atol=1e-6)
    png = png_of(a)
    a.head.value, a.query.value = 2, 11
    np.testing.assert_allclose(a.row, ref[2, 11].numpy(), atol=1e-6)
    np.testing.assert_allclose([b.get_height() for b in a.figure.axes[0].patches], a.row, atol=1e-7)
    assert png_of(a) != png
    for impl in ("dense", "looped", "unfold", "hybrid"):
        a.impl.value = impl
        assert a.max_diff < 1e-5 and f"impl <b>{impl}</b>" in a.status.value
    a.query.value = 0                                             # a global query reads every key
    assert (a.row > 0).all() and a.row.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("window, globals_text", [(0, ""), (40, ""), (0, "all"), (1, "0-3")])
def test_attention_explorer_extremes(window, globals_text):
    a = AttentionExplorer(T=8, num_heads=2, dim=8)
    a.window.value = window
    a.globals_.text.value = globals_text
    a.causal.value = True
    assert a.globals_.message.value == ""
    allowed = hybrid_mask(8, window, global_flags(8, a.globals_.positions), causal=True)[0]
    assert torch.equal(a.weights[0] > 0, allowed)                 # weights live exactly on the mask
    assert a.max_diff < 1e-5 and np.isfinite(a.row).all()


def test_cost_explorer_without_and_with_measurements(tmp_path):
    c = cost_explorer(paths=[tmp_path / "none.csv"])
    assert isinstance(c, CostExplorer) and c.measured == []
    assert "no measured points" in c.figure.get_suptitle()
    png = png_of(c)
    c.T.value = 256
    assert "T = 256" in c.table.value and png_of(c) != png
    assert c.costs == {i: ex.attention_cost(i, 256, c.window.value, c.G.value, B=c.B, H=c.H, Dh=c.Dh)
                       for i in ex.IMPLS}
    for w, G in ((0, 0), (1024, 64)):                              # extremes: G > T is clipped
        c.window.value, c.G.value = w, G
        assert all(v["flops"] > 0 for v in c.costs.values())
    c.T.value = 64
    assert "G 64" in c.table.value

    csv = tmp_path / "bench.csv"
    csv.write_text(BENCH_HEADER + "".join(
        f"{impl},x,cpu,float32,2,4,{T},32,16,1,{T / 100},{T / 50},1,0\n"
        for impl in ex.IMPLS for T in (256, 512, 1024)))
    m = CostExplorer(paths=[csv])
    assert (m.B, m.H, m.Dh, m.window.value, m.G.value) == (2, 4, 32, 16, 1)
    assert len(m.measured) == 9 and "9 measured points" in m.figure.get_suptitle()
    m.window.value = 17
    assert "no measured points" in m.figure.get_suptitle()
