"""Headless tests of the explorers: figures in tutor.viz.explorers, glue in tutor.widgets.

No browser: widgets are created in-process, their controls set from Python, and the state, the
HTML numbers and the PNG in the Output are checked after each change. One test runs a notebook
headless (nbclient) and exports it to HTML: each explorer must leave its figure as a plain image.
"""
import base64
import math

import numpy as np
import pytest
import torch

from tutor.attention import HybridSparseAttention
from tutor.bench import load_benchmarks
from tutor.costs import IMPLS, attention_cost, count_allowed, hybrid_pairs
from tutor.masks import create_mask, global_mask_at, hybrid_mask
from tutor.patterns import generate_bigbird_random, generate_block_diagonal, pattern_mask
from tutor.viz import explorers as ex
from tutor.viz.unfold import format_bytes
from tutor.widgets import (AttentionExplorer, CostExplorer, PatternExplorer, attention_explorer,
                           cost_explorer, parse_positions, pattern_explorer, toy_attention_weights)

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


def test_global_mask_at():
    assert torch.equal(global_mask_at(6, (0, 4)), global_flags(6, (0, 4)))
    assert not global_mask_at(3, ()).any() and global_mask_at(3, ()).shape == (1, 3)
    with pytest.raises(ValueError, match="0..5"):
        global_mask_at(6, (6,))


# ---------------------------------------------------------------- pure functions

@pytest.mark.parametrize("text, expected", [("0, 17", (0, 17)), ("17 0", (0, 17)), ("2-4,3", (2, 3, 4)),
                                            ("", ()), ("  ", ()), ("all", tuple(range(20)))])
def test_parse_positions(text, expected):
    assert parse_positions(text, 20) == expected


@pytest.mark.parametrize("text", ["20", "3-1", "a", "-1", "1.5"])
def test_parse_positions_rejects_with_reason(text):
    with pytest.raises(ValueError, match="positions"):
        parse_positions(text, 20)
    with pytest.raises(TypeError, match="positions"):
        parse_positions([0, 1], 20)


@pytest.mark.parametrize("T, w, g, causal", [(1, 0, (), False), (9, 2, (), False), (9, 2, (0, 4), True),
                                         (12, 20, (11,), False), (16, 3, (0, 5, 6), False)])
def test_pattern_mask_equals_hybrid_mask(T, w, g, causal):
    ours = pattern_mask(T, w, tuple(g), causal=causal)
    assert torch.equal(ours, hybrid_mask(T, w, global_flags(T, g) if len(g) else None, causal=causal)[0])


@pytest.mark.parametrize("kwargs, name", [(dict(T=0, window=1), "T"), (dict(T=4, window=-1), "window"),
                                          (dict(T=4, window=1, random_blocks=-1), "random_blocks"),
                                          (dict(T=4, window=1, block_size=0), "block_size"),
                                          (dict(T=4, window=1, random_blocks=4), "num_random_blocks")])
def test_pattern_mask_bad_input_names_the_argument(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        pattern_mask(**kwargs)


def test_pattern_mask_uses_the_zoos_block_patterns():
    """Block diagonal and BigBird's random blocks of notebook 05, OR-ed into the hybrid rule."""
    blk = pattern_mask(8, 0, block_size=4, block_diagonal=True)
    assert torch.equal(blk, create_mask(generate_block_diagonal(4), 1, 8)[0])
    rnd = pattern_mask(16, 1, block_size=4, random_blocks=2, seed=1, causal=True)
    want = create_mask(generate_bigbird_random(16, 4, 2, 1), 1, 16)[0] | hybrid_mask(16, 1)[0]
    assert torch.equal(rnd, want & torch.ones(16, 16, dtype=torch.bool).tril())
    assert not torch.equal(pattern_mask(16, 1, block_size=4, random_blocks=2, seed=2),
                           pattern_mask(16, 1, block_size=4, random_blocks=2, seed=1))
    dil = pattern_mask(12, 2, dilation=3)
    assert dil[6].nonzero().flatten().tolist() == [0, 3, 6, 9]


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"


def test_load_benchmarks_is_graceful(tmp_path):
    assert load_benchmarks([tmp_path / "missing.csv"]) == []
    good = tmp_path / "cpu.csv"
    good.write_text(BENCH_HEADER + "hybrid,blocked,cpu,float32,1,8,1024,64,64,2,3.5,12.0,4.1,1e-6\n"
                    "dense,,cpu,float32,1,8,oops,64,64,2,3.5,12.0,1,0\n"       # no T: skipped
                    "unfold,torch,cpu,float32,1,8,2048,64,64,2,7.5,,,\n")      # dense skipped: NaN
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    rows = load_benchmarks([good, tmp_path / "other.csv"])
    assert [(r["impl"], r["T"]) for r in rows] == [("hybrid", 1024.0), ("unfold", 2048.0)]
    assert math.isnan(rows[1]["peak_mem_mb"]) and rows[1]["time_ms"] == 7.5


def test_toy_attention_weights_match_the_layer_and_keep_rng():
    state = torch.get_rng_state()
    w = toy_attention_weights(10, 2, (0, 7), impl="unfold", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(3)
    layer = HybridSparseAttention(32, 4, 2, impl="dense").eval()
    x = torch.randn(1, 10, 32)
    _, ref = layer(x, global_mask=global_flags(10, (0, 7)), return_weights=True)
    assert w.shape == (4, 10, 10)
    torch.testing.assert_close(w, ref[0].detach(), atol=1e-6, rtol=0)


def test_plot_attention_explorer_bars_are_the_row():
    w = toy_attention_weights(12, 1, (3,), seed=0)[1]
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
    for control, value in ((p.causal, True), (p.dilation, 2), (p.random_blocks, 2), (p.seed, 5),
                           (p.block_diagonal, True), (p.block_size, 8)):
        old = p.mask.clone()
        control.value = value
        assert not torch.equal(p.mask, old), control.description
    assert len(p.out.outputs) == 1                                # replaced, never appended


def test_global_picker_click_and_type_stay_in_sync():
    p = PatternExplorer(T=16, window=1, global_positions=())
    assert p.allowed_pairs == hybrid_pairs(16, 1)
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
    assert set(p.memory) == set(IMPLS) and all(m > 0 for m in p.memory.values())


def test_attention_explorer_row_is_the_layers_row():
    a = attention_explorer()
    assert isinstance(a, AttentionExplorer)
    T, g = a.T, (0,)
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
    assert c.costs == {i: attention_cost(i, 256, c.window.value, c.G.value, B=c.B, H=c.H, Dh=c.Dh)
                       for i in IMPLS}
    for w, G in ((0, 0), (1024, 64)):                              # extremes: G > T is clipped
        c.window.value, c.G.value = w, G
        assert all(v["flops"] > 0 for v in c.costs.values())
    c.T.value = 64
    assert "G 64" in c.table.value

    csv = tmp_path / "bench.csv"
    csv.write_text(BENCH_HEADER + "".join(
        f"{impl},x,cpu,float32,2,4,{T},32,16,1,{T / 100},{T / 50},1,0\n"
        for impl in IMPLS for T in (256, 512, 1024)))
    m = CostExplorer(paths=[csv])
    assert (m.B, m.H, m.Dh, m.window.value, m.G.value) == (2, 4, 32, 16, 1)
    assert len(m.measured) == 9 and "9 measured points" in m.figure.get_suptitle()
    m.window.value = 17
    assert "no measured points" in m.figure.get_suptitle()


def test_random_blocks_are_capped_to_the_other_blocks():
    p = PatternExplorer(T=8, window=0, global_positions=())
    p.block_size.value = 4                                        # 2 blocks: at most 1 random block
    p.random_blocks.value = 5
    assert p.n_random == 1 and "capped at 1" in p.stats.value
    assert torch.equal(p.mask, pattern_mask(8, 0, (), block_size=4, random_blocks=1))


@pytest.mark.parametrize("make", [pattern_explorer, attention_explorer, lambda: cost_explorer(paths=[])])
def test_displayed_explorer_carries_its_figure_as_an_image(make):
    """The widget view for JupyterLab, and the current figure as image/png for everything else."""
    e = make()
    data = e._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert base64.b64decode(data["image/png"]) == png_of(e)


def test_headless_run_and_html_export_show_each_explorers_figure(tmp_path):
    """nbclient runs a notebook of the three explorer cells: each output holds the widget and its figure.

    Exported to HTML without the widget state (what a renderer that cannot run widgets sees), the
    page shows the three figures as plain images.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (
        "from tutor.widgets import pattern_explorer\npattern_explorer()",
        "from tutor.widgets import attention_explorer\nattention_explorer(T=8)",
        "from tutor.widgets import cost_explorer\ncost_explorer()")])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    pngs = []
    for cell in nb.cells:
        (out,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert {"application/vnd.jupyter.widget-view+json", "image/png"} <= set(out.data)
        assert base64.b64decode(out.data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
        pngs.append(out.data["image/png"])
    nb.metadata.pop("widgets", None)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert all(f"data:image/png;base64,{png}" in html for png in pngs)
