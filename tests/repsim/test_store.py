"""repsim.store: results and activations stores round-trip what was written, by name.

The verification of stores (manifests, damaged chunks) is tested in
tests/security/test_stores.py."""

import numpy as np
import pytest
import torch
import xarray as xr

from repsim import store
from repsim.extract import extract, extract_to_zarr
from repsim.names import EPOCH, LAYER, RUN, STIMULUS, UNIT


def _result(name, runs, layers, offset=0.0):
    values = np.arange(len(runs) * len(layers), dtype=float).reshape(len(runs), -1) + offset
    return xr.DataArray(values, dims=(RUN, LAYER), coords={RUN: runs, LAYER: layers}, name=name)


def test_results_round_trip_and_one_result_replaces_only_itself(tmp_path):
    path = tmp_path / "results.zarr"
    store.write_result(path, _result("diag_l2", ["bp", "dfa"], ["b", "a"]), provenance={"x": 1})
    store.write_result(path, _result("weight_norm", ["bp"], ["b", "a"]))
    store.write_result(path, _result("weight_norm", ["bp"], ["b", "a"], offset=10))
    got = store.open_results(path)
    assert list(got[LAYER].values) == ["b", "a"]  # the order computed, not sorted
    np.testing.assert_array_equal(got["diag_l2"].values, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(got["weight_norm"].values, [[10, 11], [np.nan, np.nan]])
    assert got["diag_l2"].attrs == {"x": 1}
    with pytest.raises(ValueError, match="needs a named DataArray"):
        store.write_result(path, _result(None, ["bp"], ["a"]))
    with pytest.raises(FileNotFoundError, match="is not a results store"):
        store.open_results(tmp_path / "none.zarr")


def test_activations_round_trip_and_iter_layers(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    x = torch.randn(6, 4)
    for run in ("bp", "sg/seed-1"):
        extract_to_zarr(net, x, ["0", "1"], tmp_path / "a.zarr", run=run, device="cpu")
    tree = store.open_activations(tmp_path / "a.zarr")
    assert tree.attrs["runs"] == ["bp", "sg/seed-1"]
    got = [(run, layer, a.dims) for run, layer, a in store.iter_layers(tree)]
    assert got == [(r, la, (STIMULUS, UNIT)) for r in ("bp", "sg/seed-1") for la in ("0", "1")]
    in_memory = extract(net, x, ["0", "1"], device="cpu")
    assert [(r, la) for r, la, _ in store.iter_layers(in_memory)] == [("", "0"), ("", "1")]
    with pytest.raises(ValueError, match=r"holds no run 'dfa'; it holds bp, sg/seed-1"):
        store.open_activations(tmp_path / "a.zarr", runs=["dfa"])


@pytest.mark.parametrize("name", ["../victim", "/abs", "a//b", ".git"])
def test_run_names_stay_inside_the_store(name):
    with pytest.raises(ValueError, match="run name"):
        store.check_run_name(name)


def test_histories_are_one_dataset_by_run_and_epoch(tmp_path):
    for run, rows in (("bp", 3), ("dfa", 2)):
        (tmp_path / run).mkdir()
        lines = ["epoch,test_accuracy"] + [f"{e},{0.1 * e}" for e in range(1, rows + 1)]
        (tmp_path / run / "history.csv").write_text("\n".join(lines))
    h = store.read_histories({"bp": tmp_path / "bp", "dfa": tmp_path / "dfa"})
    assert h["test_accuracy"].dims == (RUN, EPOCH)
    np.testing.assert_allclose(h["test_accuracy"].sel({RUN: "dfa"}).values, [0.1, 0.2, np.nan])
