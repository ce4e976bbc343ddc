"""tutor.training and tutor.viz.training: the marker task is seeded and well formed, the model
reads global_mask, a window alone cannot see past L*w, one optimizer step lowers the loss, and the
learning-curve figure shows the data it was given. No full training run here (that is notebook 06)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import tutor.attention.layer as layer_module  # noqa: E402
from tutor.training import (CLS, History, MarkerTask, Result, Setting, TinyEncoder, compare_settings,  # noqa: E402
                            default_settings, evaluate, format_table, make_batch, make_contrast_set,
                            make_dataset, receptive_field, train_model)
from tutor.viz.training import moving_average, plot_cls_attention, plot_learning_curves  # noqa: E402

TASK = MarkerTask(T=32, num_classes=3, num_noise=5, min_distance=12)


def _model(window=2, global_positions=(), impl="hybrid", n_layers=2, task=TASK, seed=0):
    torch.manual_seed(seed)
    return TinyEncoder(task.vocab_size, task.num_classes, task.T, dim=16, num_heads=2,
                       n_layers=n_layers, window=window, impl=impl, global_positions=global_positions)


# ---------------------------------------------------------------- the task
def test_batch_has_cls_one_far_marker_and_label_equal_to_its_identity():
    tokens, labels, pos = make_batch(TASK, 200, torch.Generator().manual_seed(1))
    assert tokens.shape == (200, 32) and labels.shape == (200,) and pos.shape == (200,)
    assert tokens.dtype == labels.dtype == torch.long
    assert (tokens[:, 0] == CLS).all()
    is_marker = (tokens >= 1) & (tokens <= TASK.num_classes)                  # (B, T)
    assert (is_marker.sum(1) == 1).all(), "exactly one marker per sequence"
    assert torch.equal(is_marker.float().argmax(1), pos)
    assert ((pos >= TASK.min_distance) & (pos < TASK.T)).all()
    assert torch.equal(tokens[torch.arange(200), pos], labels + 1)
    assert tokens.max() < TASK.vocab_size and tokens[:, 1:].min() >= 1
    assert set(labels.tolist()) == {0, 1, 2}, "every class occurs"
    # the part of the sequence before min_distance says nothing about the label
    assert not is_marker[:, :TASK.min_distance].any()


def test_task_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = (make_dataset(TASK, 50, s) for s in (7, 7, 8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_contrast_set_groups_differ_only_in_the_marker():
    tokens, labels, pos = make_contrast_set(TASK, 20, seed=3)                  # C = 3
    assert tokens.shape == (60, 32) and labels.tolist() == [0, 1, 2] * 20
    assert torch.equal(tokens[torch.arange(60), pos], labels + 1)
    groups = tokens.view(20, 3, 32)                                            # (N, C, T)
    differs = (groups != groups[:, :1]).any(1)                                 # (N, T): columns that vary
    assert torch.equal(differs.float().argmax(1), pos[::3]) and differs.sum() == 20
    assert all(torch.equal(x, y) for x, y in zip((tokens, labels, pos), make_contrast_set(TASK, 20, seed=3)))
    # a model that never sees the marker answers each group once: accuracy exactly 1/C
    assert evaluate(_model(window=2).eval(), tokens, labels) == pytest.approx(1 / 3)


@pytest.mark.parametrize("kwargs", [dict(T=0), dict(num_classes=1), dict(min_distance=32),
                                    dict(num_noise=2.5)])
def test_task_rejects_bad_parameters_by_name(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        MarkerTask(**{**dict(T=32, min_distance=8), **kwargs})
    with pytest.raises(ValueError, match="batch_size"):
        make_batch(TASK, 0, torch.Generator())


# ---------------------------------------------------------------- the model
def test_forward_shape_and_global_positions_build_the_mask():
    tokens, _, _ = make_dataset(TASK, 4, 0)
    assert _model()(tokens).shape == (4, TASK.num_classes)
    m = _model(global_positions=(0, 5))
    mask = m.default_global_mask(tokens)
    assert mask.shape == (4, 32) and mask.dtype == torch.bool
    assert mask[:, [0, 5]].all() and mask.sum() == 8
    assert _model().default_global_mask(tokens) is None
    with pytest.raises(ValueError, match="global_positions"):
        _model(global_positions=(32,))
    with pytest.raises(ValueError, match="tokens"):
        m(tokens.float())
    logits, maps = m(tokens, return_weights=True)
    assert logits.shape == (4, 3) and len(maps) == 2
    for weights in maps:                                                      # (B, H, T, T) probabilities
        assert weights.shape == (4, 2, 32, 32)
        torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2, 32))
        assert (weights[:, :, 0] > 0).all(), "global [CLS] row reads every key"
        assert (weights[:, :, 10, 20] == 0).all(), "an ordinary row only reads its window and the globals"


def test_global_mask_reaches_every_attention_call(monkeypatch):
    seen = []
    real = layer_module.sparse_attention

    def spy(q, k, v, window, global_mask=None, *args, **kwargs):
        seen.append((window, kwargs.get("impl"), global_mask))
        return real(q, k, v, window, global_mask, *args, **kwargs)

    monkeypatch.setattr(layer_module, "sparse_attention", spy)
    tokens, _, _ = make_dataset(TASK, 3, 0)
    _model(window=3, global_positions=(0,))(tokens)
    assert len(seen) == 2                                                     # one call per layer
    for window, impl, gm in seen:
        assert window == 3 and impl == "hybrid"
        assert gm is not None and gm[:, 0].all() and gm.sum() == 3
    seen.clear()
    explicit = torch.zeros(3, 32, dtype=torch.bool)
    explicit[:, 7] = True
    _model(window=3, global_positions=(0,))(tokens, global_mask=explicit)    # explicit mask wins
    assert all(gm is explicit for _, _, gm in seen)


def test_a_window_alone_cannot_see_past_the_receptive_field_but_a_global_cls_can():
    L, w = 2, 2
    tokens, _, _ = make_dataset(TASK, 2, 0)
    reach = receptive_field(L, w)
    assert reach == 4
    near, far = tokens.clone(), tokens.clone()
    near[:, reach] = TASK.vocab_size - 1 if near[0, reach] != TASK.vocab_size - 1 else TASK.vocab_size - 2
    far[:, reach + 1:] = torch.flip(far[:, reach + 1:], dims=[1])           # shuffle everything beyond L*w
    local, hybrid = _model(w, n_layers=L).eval(), _model(w, (CLS,), n_layers=L).eval()
    with torch.no_grad():
        assert torch.equal(local(far), local(tokens)), "tokens beyond L*w reached [CLS] without globals"
        assert not torch.allclose(local(near), local(tokens)), "token L*w should still reach [CLS]"
        assert not torch.allclose(hybrid(far), hybrid(tokens)), "a global [CLS] must read far tokens"


def test_dense_setting_equals_hybrid_with_a_window_covering_the_sequence():
    tokens, _, _ = make_dataset(TASK, 2, 0)
    dense, wide = _model(window=32, impl="dense"), _model(window=32, impl="hybrid")
    with torch.no_grad():
        torch.testing.assert_close(dense(tokens), wide(tokens), rtol=1e-4, atol=1e-5)
    names = [s.name for s in default_settings(4, 128)]
    assert names == ["local-only", "local + global", "dense"]
    assert default_settings(4, 128)[2] == Setting("dense", 128, "dense", ())


# ---------------------------------------------------------------- training
def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    model = _model(global_positions=(CLS,))
    tokens, labels, _ = make_dataset(TASK, 16, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = F.cross_entropy(model(tokens), labels)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = F.cross_entropy(model(tokens), labels)
    assert after.item() < before.item() - 1e-3


def test_train_model_records_history_and_is_deterministic():
    runs = []
    for _ in range(2):
        model = _model(global_positions=(CLS,))
        hist = train_model(model, TASK, steps=3, batch_size=8, seed=5, progress=False)
        runs.append((hist, [p.detach().clone() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert len(h1.loss) == len(h1.accuracy) == len(h1.step_time) == 3
    assert all(t > 0 for t in h1.step_time) and all(0 <= a <= 1 for a in h1.accuracy)
    assert h1.loss == h2.loss and all(torch.equal(a, b) for a, b in zip(p1, p2))


def test_evaluate_counts_correct_predictions():
    class Fixed(torch.nn.Module):                                             # always predicts class 1
        def forward(self, tokens):
            return torch.tensor([0.0, 1.0, 0.0]).expand(len(tokens), 3)

    tokens = torch.zeros(10, 4, dtype=torch.long)
    labels = torch.tensor([1, 1, 1, 0, 2, 1, 0, 0, 2, 1])
    assert evaluate(Fixed(), tokens, labels, batch_size=3) == 0.5


def test_compare_settings_and_table_format():
    task = MarkerTask(T=16, num_noise=4, min_distance=6)
    res = compare_settings(task, default_settings(2, 16), steps=2, batch_size=4, eval_size=10,
                           progress=False, dim=8, num_heads=1, n_layers=1)
    assert list(res) == ["local-only", "local + global", "dense"]
    assert all(isinstance(r, Result) and len(r.history.loss) == 2 for r in res.values())
    lines = format_table(res).splitlines()
    assert [ln.rsplit(": ", 1)[0] for ln in lines] == list(res)
    assert all(ln.rsplit(": ", 1)[1] == f"{r.accuracy:.2f}" for ln, r in zip(lines, res.values()))
    assert "ms/step" in format_table(res, timing=True)
    with pytest.raises(ValueError, match="steps"):
        train_model(res["dense"].model, task, steps=0, progress=False)


# ---------------------------------------------------------------- the figure
def test_moving_average_is_a_trailing_mean():
    np.testing.assert_allclose(moving_average([1, 3, 5, 7], 2), [1, 2, 4, 6])
    np.testing.assert_allclose(moving_average([2, 4], 1), [2, 4])
    with pytest.raises(ValueError, match="window"):
        moving_average([1, 2], 0)


def test_plot_learning_curves_draws_each_run_and_chance():
    hists = {"a": History(loss=[1.0, 0.5, 0.25], accuracy=[0.5, 0.75, 1.0]),
             "b": History(loss=[0.7, 0.7, 0.7], accuracy=[0.5, 0.5, 0.5])}
    fig = plot_learning_curves(hists, smooth=1, chance=0.5)
    try:
        assert isinstance(fig, Figure)
        ax_loss, ax_acc = fig.axes[:2]
        assert [ln.get_label() for ln in ax_loss.lines] == ["a", "b"]
        np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), [1.0, 0.5, 0.25])
        np.testing.assert_allclose(ax_acc.lines[0].get_ydata(), [0.5, 0.75, 1.0])
        np.testing.assert_allclose(ax_acc.lines[-1].get_ydata(), [0.5, 0.5])            # chance line
        assert ax_acc.lines[0].get_color() == ax_loss.lines[0].get_color()
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="histories"):
        plot_learning_curves({})
    with pytest.raises(ValueError, match="histories"):
        plot_learning_curves({"x": History(loss=[1.0], accuracy=[])})


def test_plot_cls_attention_draws_one_line_per_layer_and_the_marker():
    rows = [[0.5, 0.25, 0.25, 0.0], [0.1, 0.1, 0.1, 0.7]]
    fig = plot_cls_attention(rows, marker=3)
    try:
        ax = fig.axes[0]
        assert [ln.get_label() for ln in ax.lines] == ["layer 1", "layer 2", "marker (3)"]
        np.testing.assert_allclose(ax.lines[1].get_ydata(), rows[1])
        np.testing.assert_allclose(ax.lines[2].get_xdata(), [3, 3])
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="marker"):
        plot_cls_attention(rows, marker=4)
    with pytest.raises(ValueError, match="rows"):
        plot_cls_attention([0.5, 0.5])
