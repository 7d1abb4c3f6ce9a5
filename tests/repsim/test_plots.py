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
