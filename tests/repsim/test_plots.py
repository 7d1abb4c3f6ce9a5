"""Figures take xarray objects and draw what they are given: one panel per run and layer,
one line per run (and split), SG positions marked, bad input explained."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from repsim import plots


def _rdms(runs=("bp", "dfa"), layers=8, n=12):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), n // 3)
    return xr.DataArray(
        rng.random((len(runs), layers, n, n)), dims=("run", "layer", "stimulus", "stimulus_"),
        coords={"run": list(runs), "layer": [f"block{i + 1}" for i in range(layers)],
                "label": ("stimulus", labels), "label_": ("stimulus_", labels)},
        attrs={"metric": "correlation"},
    )  # fmt: skip


def _per_layer(name, runs=("bp", "sg"), layers=5, split=False):
    rng = np.random.default_rng(1)
    dims, shape = ("run", "layer"), (len(runs), layers)
    coords = {"run": list(runs), "layer": [f"block{i + 1}" for i in range(layers)]}
    if split:
        dims, shape, coords = (*dims, "split"), (*shape, 2), {**coords, "split": ["train", "test"]}
    return xr.DataArray(rng.random(shape), dims=dims, coords=coords, name=name)


def teardown_function():
    plt.close("all")


def test_the_rdm_grid_has_a_row_per_run_and_a_column_per_chosen_layer():
    fig = plots.rdm_grid(_rdms(), max_columns=4)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * 4
    assert [ax.get_title() for ax in images[:4]] == ["block1", "block3", "block6", "block8"]
    assert images[0].get_ylabel() == "bp" and images[4].get_ylabel() == "dfa"
    assert len(images[0].patches) == 3  # one outline per class block
    fig = plots.rdm_grid(_rdms(), layers=["block2"])
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["block2", ""]


def test_curves_draw_one_line_per_run_and_mark_sg_positions():
    d = _per_layer("diag_l2")
    fig = plots.diag_l2_curves(d, marks={"sg": ["block3"]})
    ax = fig.axes[0]
    data_lines = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(data_lines) == 2
    np.testing.assert_allclose(data_lines[1].get_ydata(), d.sel(run="sg").values)
    assert len(ax.lines) == 3  # and the dotted SG line
    fig = plots.weight_norm_curves(_per_layer("weight_norm"))
    assert len(fig.axes[0].lines) == 2


def test_probe_curves_draw_train_and_test_per_run():
    fig = plots.probe_curves(
        _per_layer("probe_accuracy", split=True), _per_layer("probe_mse", split=True)
    )
    assert len(fig.axes) == 2 and all(len(ax.lines) == 4 for ax in fig.axes)
    fig = plots.probe_curves(mse=_per_layer("probe_mse", split=True))
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match=r"needs probe_accuracy, probe_mse or both"):
        plots.probe_curves()


def test_learning_curves_plot_each_metric_and_explain_a_missing_one():
    h = xr.Dataset(
        {"train_accuracy": (("run", "epoch"), np.random.default_rng(0).random((2, 4))),
         "test_accuracy": (("run", "epoch"), np.random.default_rng(0).random((2, 4)))},
        coords={"run": ["bp", "dfa"], "epoch": [1, 2, 3, 4]},
    )  # fmt: skip
    fig = plots.learning_curves(h)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    with pytest.raises(
        ValueError, match=r"history has no sg_loss; it has train_accuracy, test_accuracy"
    ):
        plots.learning_curves(h, metrics=["sg_loss"])


def test_probe_curves_show_train_solid_and_held_out_dashed():
    fig = plots.probe_curves(_per_layer("probe_accuracy", split=True))
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].lines}
    assert styles == {"bp train": "-", "bp test": "--", "sg train": "-", "sg test": "--"}


def test_learning_curves_can_show_the_error_on_a_log_axis():
    acc = np.array([[0.5, 0.9, 0.99, 0.999]])
    h = xr.Dataset({"train_accuracy": (("run", "epoch"), acc)},
                   coords={"run": ["bp"], "epoch": [1, 2, 3, 4]})  # fmt: skip
    ax = plots.learning_curves(h, metrics=["train_accuracy"], error=True).axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 1 - acc[0])
    assert "error" in ax.get_title()


def _quality(tmp_path):
    """Two checkpoints' sg_quality.csv (one SG, and three), read back as training writes them."""
    from repsim import checkpoints, store

    runs = {}
    for run, positions in (("sg-single", [2]), ("sg-full", [1, 2, 3])):
        rows = [{"step": s, "epoch": 1, "position": p, "measure": m, "value": s / 10 + p}
                for s in (0, 5, 10) for m in ("sg_cosine", "sg_relative_error")
                for p in positions]  # fmt: skip
        checkpoints.save(tmp_path / run, {"name": run}, {}, tables={checkpoints.SG_QUALITY: rows})
        runs[run] = tmp_path / run
    runs["bp"] = tmp_path / "bp"  # no table: left out
    return store.read_sg_quality(runs)


def test_sg_quality_is_read_as_one_array_and_drawn_one_curve_per_position(tmp_path):
    q = _quality(tmp_path)
    assert dict(q.sizes) == {"run": 2, "measure": 2, "position": 3, "step": 3}
    assert list(q["run"].values) == ["sg-single", "sg-full"]
    assert float(q.sel(run="sg-full", measure="sg_cosine", position=3, step=10)) == 4.0
    assert np.isnan(q.sel(run="sg-single", position=1)).all()  # no SG there
    fig = plots.sg_quality_curves(q)
    assert len(fig.axes) == 2 * 2
    assert [len(ax.lines) for ax in fig.axes] == [1, 1, 3, 3]
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), [1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="no measure target_cosine"):
        plots.sg_quality_curves(q, measures=["target_cosine"])
