"""Plotting functions of tutor.viz.unfold and tutor.viz.timing: each returns a Figure that shows
exactly the data it was given (cell labels, slot kinds, bar heights, fitted lines), and bad input
raises a clear error."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tutor.attention.global_tokens import global_index  # noqa: E402
from tutor.attention.unfold import local_allowed  # noqa: E402
from tutor.viz.timing import fit_power_law, format_seconds, plot_timings  # noqa: E402
from tutor.viz.unfold import (SLOT_KINDS, format_bytes, plot_memory_bars, plot_score_slots,  # noqa: E402
                              plot_unfold, slot_kinds)


@pytest.fixture
def fig_closer():
    figs = []
    yield figs.append
    for f in figs:
        plt.close(f)


def _texts(ax):
    return [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("T, w", [(8, 2), (3, 2), (5, 0), (1, 3)])
def test_plot_unfold_labels_every_slot_with_its_key_and_marks_padding(T, w, fig_closer):
    fig = plot_unfold(T, w, highlight=(T - 1,))
    fig_closer(fig)
    assert isinstance(fig, Figure)
    left, right = fig.axes
    W = 2 * w + 1
    # the stacked result, row by row: slot r of query i is key i - w + r, or padding
    expected = ["pad" if not 0 <= i - w + r < T else str(i - w + r) for i in range(T) for r in range(W)]
    assert _texts(right) == expected
    n_pad = sum(not 0 <= i - w + r < T for i in range(T) for r in range(W))
    assert _texts(right).count("pad") == n_pad
    hatched = [p for p in right.patches if p.get_hatch()]
    assert len(hatched) == n_pad
    # left: the padded sequence (T + 2w cells, 2w of them padding) and the same T x W windows
    assert _texts(left)[:T + 2 * w] == ["pad"] * w + [str(j) for j in range(T)] + ["pad"] * w
    assert _texts(left)[T + 2 * w:] == expected
    # one highlight outline per panel on the result, two on the left (sequence span + row)
    outlines = [p for p in right.patches if not p.get_fill()]
    assert len(outlines) == 1 and outlines[0].get_y() == pytest.approx(T - 1 + 1.5)


def test_plot_unfold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        plot_unfold(4, -1)
    with pytest.raises(TypeError, match="window"):
        plot_unfold(4, 1.5)
    with pytest.raises(ValueError, match="T"):
        plot_unfold(0, 1)
    with pytest.raises(ValueError, match="highlight"):
        plot_unfold(4, 1, highlight=(4,))


def test_slot_kinds_agree_with_unfold_attention_masks():
    T, w = 11, 2
    g = torch.zeros(3, T, dtype=torch.bool)
    g[0, [0, 5]] = True
    g[1, 3] = True                                       # sequence 2 has no global token
    pad = torch.zeros(3, T, dtype=torch.bool)
    pad[1, 9:] = True
    kinds = slot_kinds(w, g, pad)
    idx, valid = global_index(g & ~pad)
    G = idx.shape[1]
    assert kinds.shape == (3, T, 2 * w + 1 + G) and G == 2
    rows = ~(g | pad)                                    # ordinary, unpadded query rows
    # exactly the local slots unfold_attention scores are "local key"
    ok_loc = local_allowed(T, w, g & ~pad, pad, causal=False)
    assert torch.equal((kinds[..., :2 * w + 1] == 0)[rows], ok_loc[rows])
    # global columns: scored where the slot is valid, padded slot otherwise
    assert torch.equal((kinds[..., 2 * w + 1:] == 1)[rows], valid[:, None, :].expand(-1, T, -1)[rows])
    assert (kinds[2, :, 2 * w + 1:] == 4).all()          # no global token: every global slot padded
    # a global key inside a window is masked in the local slots (it is scored once, as global)
    assert kinds[0, 1, 1] == 3 and kinds[0, 4, 3] == 3   # query 1 slot 1 = key 0; query 4 slot 3 = key 5
    assert kinds[0, 1, 0] == 2                           # query 1 slot 0 = key -1: edge padding
    assert (kinds[0, [0, 5]] == 6).all() and (kinds[1, 3] == 6).all()   # global rows
    assert (kinds[1, 9:] == 5).all() and kinds[1, 8, 3] == 5            # padded rows / keys


def test_plot_score_slots_shows_the_kinds_with_a_legend(fig_closer):
    g = torch.zeros(2, 9, dtype=torch.bool)
    g[0, 4] = True
    g[1, [1, 2]] = True
    fig = plot_score_slots(1, g)
    fig_closer(fig)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    kinds = slot_kinds(1, g)
    for b, ax in enumerate(fig.axes):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), kinds[b].numpy())
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {SLOT_KINDS[k][0] for k in kinds.unique().tolist()}


def test_slot_kinds_rejects_bad_masks():
    with pytest.raises(TypeError, match="global_mask"):
        slot_kinds(1, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="key_padding_mask"):
        slot_kinds(1, torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool))


def test_format_bytes_uses_binary_units():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024 ** 3) == "3.0 GiB"
    with pytest.raises(ValueError):
        format_bytes(-1)


def test_plot_memory_bars_heights_and_ratios(fig_closer):
    k, win = [1024.0, 4096.0], [1024.0 * 5, 4096.0 * 129]
    fig = plot_memory_bars(["a", "b"], k, win)
    fig_closer(fig)
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == k + win
    assert ax.get_yscale() == "log"
    assert "x5" in _texts(ax) and "x129" in _texts(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="equal"):
        plot_memory_bars(["a"], k, win)
    with pytest.raises(ValueError, match="positive"):
        plot_memory_bars(["a"], [0], [1])


def test_fit_power_law_recovers_exponent_and_anchors_fixed_one():
    T = np.array([64, 128, 256, 512])
    c, p = fit_power_law(T, 3e-6 * T ** 1.5)
    assert p == pytest.approx(1.5) and c == pytest.approx(3e-6)
    secs = np.array([1.0, 1.0, 1.0, 8.0])                # overhead-dominated, then growth
    c, p = fit_power_law(T, secs, exponent=2)
    assert p == 2 and c * 512 ** 2 == pytest.approx(8.0)
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([8, 8], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([8, 16], [0.0, 2.0])


def test_format_seconds_picks_a_readable_unit():
    assert format_seconds(3.5e-4) == "350 µs"
    assert format_seconds(0.0123) == "12.3 ms"
    assert format_seconds(42.0) == "42 s"
    assert format_seconds(7200.0) == "2 h"
    assert format_seconds(3 * 86400.0) == "3 days"
    with pytest.raises(ValueError):
        format_seconds(float("nan"))


def test_plot_timings_draws_measured_and_extrapolated_lines(fig_closer):
    T = [64, 128, 256]
    timings = {"loop": [0.01, 0.02, 0.04], "dense": [0.002, 0.004, 0.016]}   # dense: not a clean T^2
    fig = plot_timings(T, timings, extrapolate_to=4096, exponents={"dense": 2})
    fig_closer(fig)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == 4                            # 2 measured + 2 dashed fits
    np.testing.assert_allclose(ax.lines[0].get_ydata(), timings["loop"])
    for measured, fit, secs in zip(ax.lines[:2], ax.lines[2:], timings.values()):
        assert fit.get_linestyle() == "--" and fit.get_color() == measured.get_color()
    # loop fitted ~T^1 from 0.04 s at 256 -> 0.64 s at 4096; dense fixed ~T^2 -> 4.1 s
    assert ax.lines[2].get_ydata()[-1] == pytest.approx(0.64)
    assert ax.lines[3].get_ydata()[-1] == pytest.approx(0.016 * 16 ** 2)
    assert {"640 ms", "4.1 s"} <= set(_texts(ax))
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["loop  (~T^1)", "dense  (~T^2)"]


def test_plot_timings_without_extrapolation_and_bad_input(fig_closer):
    fig = plot_timings([8, 16], {"a": [1.0, 2.0]})
    fig_closer(fig)
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="timings\\['a'\\]"):
        plot_timings([8, 16], {"a": [1.0]})
    with pytest.raises(ValueError, match="extrapolate_to"):
        plot_timings([8, 16], {"a": [1.0, 2.0]}, extrapolate_to=16)
    with pytest.raises(ValueError, match="timings"):
        plot_timings([8, 16], {})
