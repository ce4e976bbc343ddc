"""Plotting functions of tutor.viz.masks and tutor.viz.scaling: they return Figures that show
exactly the data they were given, and refuse bad input with a clear message."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tutor.masks import generate_local_window, hybrid_mask  # noqa: E402
from tutor.viz.masks import as_mask_array, plot_attention_map, plot_mask, plot_masks_grid  # noqa: E402
from tutor.viz.scaling import loglog_slope, plot_scaling  # noqa: E402


@pytest.fixture
def fig_closer():
    figs = []
    yield figs.append
    for f in figs:
        plt.close(f)


def _image(ax):
    assert len(ax.images) == 1
    return np.asarray(ax.images[0].get_array())


def test_plot_mask_image_equals_mask_and_title_counts_pairs(fig_closer):
    g = torch.zeros(1, 12, dtype=torch.bool)
    g[0, [0, 7]] = True
    mask = hybrid_mask(12, 2, g)[0]                                    # (T, T)
    fig = plot_mask(mask, title="hybrid", global_mask=g[0])
    fig_closer(fig)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    np.testing.assert_array_equal(_image(ax), mask.numpy().astype(np.uint8))
    n = int(mask.sum())
    assert ax.get_title() == f"hybrid\n{n} / 144 pairs ({n / 144:.0%})"
    # one row band and one column band per global token
    assert len(ax.patches) == 4


def test_plot_mask_accepts_mask_mod_with_T_and_uses_its_name(fig_closer):
    fig = plot_mask(generate_local_window(1), 6, show_count=False)
    fig_closer(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "local_w1"
    expected = (np.abs(np.arange(6)[:, None] - np.arange(6)[None, :]) <= 1).astype(np.uint8)
    np.testing.assert_array_equal(_image(ax), expected)


def test_plot_mask_draws_into_given_axes(fig_closer):
    fig, (a, b) = plt.subplots(1, 2)
    fig_closer(fig)
    out = plot_mask(torch.eye(4, dtype=torch.bool), ax=b)
    assert out is fig
    assert len(a.images) == 0 and len(b.images) == 1


@pytest.mark.parametrize("bad, exc, words", [
    (torch.ones(3, 4, dtype=torch.bool), ValueError, "(3, 4)"),
    (torch.ones(2, 3, 3, dtype=torch.bool), ValueError, "(2, 3, 3)"),
    (torch.ones(3, 3), TypeError, "float32"),
    ([[True]], TypeError, "list"),
])
def test_plot_mask_rejects_bad_masks(bad, exc, words):
    with pytest.raises(exc, match="mask") as info:
        plot_mask(bad)
    assert words in str(info.value)


def test_mask_mod_without_T_and_bad_global_positions_raise():
    with pytest.raises(ValueError, match="T must be given"):
        as_mask_array(generate_local_window(1))
    with pytest.raises(ValueError, match="global_mask"):
        plot_mask(torch.eye(4, dtype=torch.bool), global_mask=[5])


def test_global_positions_as_list_and_empty_list(fig_closer):
    fig = plot_mask(torch.eye(5, dtype=torch.bool), global_mask=[1, 3])
    fig_closer(fig)
    assert len(fig.axes[0].patches) == 4
    fig = plot_mask(torch.eye(5, dtype=torch.bool), global_mask=[])
    fig_closer(fig)
    assert len(fig.axes[0].patches) == 0


def test_plot_masks_grid_one_axes_per_mask_titles_and_data(fig_closer):
    T = 10
    masks = {"local": hybrid_mask(T, 1)[0], "dense": torch.ones(T, T, dtype=torch.bool),
             "causal": torch.ones(T, T, dtype=torch.bool).tril()}
    fig = plot_masks_grid(masks, ncols=2)
    fig_closer(fig)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3                       # the unused fourth cell is removed
    for ax, (name, m) in zip(fig.axes, masks.items()):
        assert ax.get_title().startswith(f"{name}\n{int(m.sum())} / {T * T} pairs")
        np.testing.assert_array_equal(_image(ax), m.numpy().astype(np.uint8))


def test_plot_masks_grid_rejects_empty_and_bad_ncols():
    with pytest.raises(ValueError, match="masks"):
        plot_masks_grid({})
    with pytest.raises(ValueError, match="ncols"):
        plot_masks_grid({"a": torch.eye(3, dtype=torch.bool)}, ncols=0)


def test_plot_attention_map_greys_out_blocked_pairs(fig_closer):
    T = 8
    mask = hybrid_mask(T, 1)[0]
    weights = torch.rand(T, T) * mask
    weights = weights / weights.sum(-1, keepdim=True)
    fig = plot_attention_map(weights, mask=mask, title="map")
    fig_closer(fig)
    assert len(fig.axes) == 2                       # the map and its colorbar
    ax = fig.axes[0]
    assert ax.get_title() == "map"
    data = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(data), ~mask.numpy())
    np.testing.assert_allclose(data.filled(0.0), weights.numpy(), rtol=1e-6)


def test_plot_attention_map_without_mask_or_colorbar(fig_closer):
    w = np.full((4, 4), 0.25)
    fig = plot_attention_map(w, colorbar=False)
    fig_closer(fig)
    assert len(fig.axes) == 1
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), w)
    with pytest.raises(ValueError, match=r"weights must have shape \(T, T\).*\(1, 1, 4, 4\)"):
        plot_attention_map(torch.ones(1, 1, 4, 4))


def test_plot_scaling_lines_scales_and_guides(fig_closer):
    T = [64, 128, 256, 512]
    series = {"dense": [1.0, 4.0, 16.0, 64.0], "local": [1.0, 2.0, None, 8.0]}
    fig = plot_scaling(T, series, ylabel="bytes", guides=(1, 2), title="cost")
    fig_closer(fig)
    (ax,) = fig.axes
    assert len(ax.lines) == 4
    assert [l.get_label() for l in ax.lines] == ["dense", "local", "~T^1", "~T^2"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), series["dense"])
    assert np.isnan(ax.lines[1].get_ydata()[2])
    np.testing.assert_allclose(ax.lines[3].get_ydata(), series["dense"])   # slope-2 guide
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_ylabel() == "bytes" and ax.get_title() == "cost"


def test_plot_scaling_guides_through_the_anchor_point(fig_closer):
    T = [1, 2, 4]
    fig = plot_scaling(T, {"t": [5.0, 3.0, 8.0]}, guides=(2,), anchor=-1)
    fig_closer(fig)
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [0.5, 2.0, 8.0])
    fig = plot_scaling(T, {"t": [5.0, None, 8.0]}, guides=(1,), anchor=1)   # NaN anchor: nearest point
    fig_closer(fig)
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [5.0, 10.0, 20.0])
    with pytest.raises(ValueError, match="anchor"):
        plot_scaling(T, {"t": [1, 2, 3]}, guides=(1,), anchor=3)


def test_plot_scaling_linear_axes_and_length_mismatch(fig_closer):
    fig = plot_scaling([1, 2], {"a": [3, 4]}, logx=False, logy=False)
    fig_closer(fig)
    assert fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match=r"series\['a'\] has 3 values but T_values has 2"):
        plot_scaling([1, 2], {"a": [1, 2, 3]})


def test_loglog_slope_recovers_the_exponent():
    T = np.array([16, 32, 64, 128])
    assert loglog_slope(T, 3.0 * T ** 2) == pytest.approx(2.0)
    assert loglog_slope(T, 0.5 * T) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        loglog_slope([1, 2], [1, -1])
