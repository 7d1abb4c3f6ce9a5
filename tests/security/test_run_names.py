"""A run name never reaches outside its store (issue 11, item 5)."""

import pytest
import torch
from torch import nn

from repsim import store
from repsim.extract import extract_to_zarr


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3))


@pytest.mark.parametrize(
    ("run", "match"),
    [
        ("../victim", r"'\.\./victim' has an empty, '\.' or '\.\.' part"),
        ("bp/../../victim", r"has an empty, '\.' or '\.\.' part"),
        ("./bp", r"has an empty, '\.' or '\.\.' part"),
        ("bp/", r"has an empty, '\.' or '\.\.' part"),
        ("", r"run name must be a non-empty string"),
        ("/tmp/victim", r"'/tmp/victim' is an absolute path"),
        (".hidden", r"hidden part '\.hidden'"),
        ("bp/.git", r"hidden part '\.git'"),
    ],
)
def test_run_names_that_leave_or_hide_in_the_store_are_refused(tmp_path, run, match):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("k")
    path = tmp_path / "stores" / "a.zarr"
    with pytest.raises(ValueError, match=match):
        extract_to_zarr(_net(), torch.randn(3, 4), ["0"], path, run=run, device="cpu")
    with pytest.raises(ValueError, match=match):
        store.RunWriter(path, run, [0], [0], {})
    with pytest.raises(ValueError, match=match):
        store.read_run_attrs(path, run)
    assert (victim / "keep.txt").read_text() == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # nothing written at all


def test_nested_run_names_still_work(tmp_path):
    path = tmp_path / "a.zarr"
    extract_to_zarr(_net(), torch.randn(3, 4), ["0"], path, run="bp/seed-1", device="cpu")
    assert store.open_activations(path).attrs["runs"] == ["bp/seed-1"]


@pytest.mark.parametrize("name", ["..", "."])
def test_result_names_that_are_paths_are_refused(tmp_path, name):
    import xarray as xr

    result = xr.DataArray([1.0], dims="run", coords={"run": ["a"]}, name=name)
    with pytest.raises(ValueError, match=r"cannot name a zarr group"):
        store.write_result(tmp_path / "results.zarr", result)
    assert not (tmp_path / "results.zarr").exists()
