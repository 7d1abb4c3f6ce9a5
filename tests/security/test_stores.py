"""Stores are verified, not trusted: a missing, truncated or overwritten chunk of an
activations or results store is an error that names it, never zeros or NaN read as data."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from repsim import rdm, store
from tests.repsim.test_report import _checkpoint

STIMULI = ["--quiet", "--stimuli", "mnist-5k:test:40"]


def _store(path: Path, n: int = 50, layers=("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    with store.RunWriter(path, "bp", np.arange(n) % 10, np.arange(n), {}) as w:
        for layer in layers:
            w.add_layer(layer, 6)
            w.write(layer, 0, rng.standard_normal((n, 6)).astype(np.float32))
        w.commit()
    return path


def _chunk(path: Path, rel: str = "bp/b/activations/c/0/0") -> Path:
    file = path / rel
    assert file.is_file()
    return file


def _overwrite(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # same size, other bytes
    file.write_bytes(bytes(data))


def test_an_intact_store_opens_and_a_deleted_chunk_is_named(tmp_path):
    path = _store(tmp_path / "a.zarr")
    assert store.open_activations(path)["bp"]["b"]["activations"].shape == (50, 6)
    _chunk(path).unlink()
    with pytest.raises(
        store.DamagedStoreError,
        match=r"run 'bp': layer 'b', array 'activations', chunk c/0/0 is missing; recompute",
    ):
        store.open_activations(path)


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (_overwrite, "is corrupt"),
        (lambda f: f.write_bytes(f.read_bytes()[:-3]), r"has \d+ bytes, its writer wrote \d+"),
    ],
)
def test_an_altered_chunk_is_named_even_after_a_verified_open(tmp_path, damage, what):
    path = _store(tmp_path / "a.zarr")
    store.open_activations(path)  # verified once: the next open must still see the change
    damage(_chunk(path))
    with pytest.raises(
        store.DamagedStoreError, match=f"layer 'b', array 'activations', chunk c/0/0 {what}"
    ):
        store.open_activations(path)


def test_a_missing_activation_chunk_reads_as_nan_not_zeros(tmp_path):
    path = _store(tmp_path / "a.zarr")
    _chunk(path).unlink()
    acts = store.open_activations(path, verify=False)["bp"]["b"]["activations"].values
    assert np.isnan(acts).all()


def test_a_run_without_a_manifest_is_refused(tmp_path):
    import zarr

    path = _store(tmp_path / "a.zarr")
    del zarr.open_group(str(path / "bp"), mode="r+").attrs["manifest"]
    with pytest.raises(store.DamagedStoreError, match="has no manifest"):
        store.open_activations(path)


def _results(path: Path) -> Path:
    da = xr.DataArray(
        np.arange(6.0).reshape(2, 3), dims=("run", "layer"),
        coords={"run": ["bp", "dfa"], "layer": ["a", "b", "c"]}, name="diag_l2",
    )  # fmt: skip
    store.write_result(path, da)
    return path


@pytest.mark.parametrize(
    ("damage", "what"), [(Path.unlink, "is missing"), (_overwrite, "is corrupt")]
)
def test_open_results_refuses_a_damaged_result(tmp_path, damage, what):
    path = _results(tmp_path / "results.zarr")
    np.testing.assert_array_equal(store.open_results(path)["diag_l2"].values[1], [3, 4, 5])
    damage(_chunk(path, "diag_l2/diag_l2/c/0/0"))
    with pytest.raises(
        store.DamagedStoreError,
        match=f"result 'diag_l2': array 'diag_l2', chunk c/0/0 {what}",
    ):
        store.open_results(path)


@pytest.mark.parametrize("damage", [Path.unlink, _overwrite])
def test_the_command_names_the_chunk_and_the_command_that_repairs_it(tmp_path, capsys, damage):
    _checkpoint(tmp_path / "bp", 0)
    argv = [str(tmp_path), *STIMULI]
    assert rdm.main(argv) == 0
    before = store.open_results(tmp_path / "results.zarr")["diag_l2"].values
    damage(_chunk(tmp_path / "activations.zarr", "bp/block2/activations/c/0/0"))
    capsys.readouterr()
    assert rdm.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "run 'bp': layer 'block2', array 'activations', chunk c/0/0" in err
    assert (
        f"recompute it: python -m repsim.rdm {tmp_path} --quiet --stimuli mnist-5k:test:40 --force"
        in err
    )
    assert rdm.main([*argv, "--force"]) == 0
    np.testing.assert_array_equal(
        store.open_results(tmp_path / "results.zarr")["diag_l2"].values, before
    )
    assert rdm.main(argv) == 0  # up to date again


def test_a_damaged_results_chunk_is_named_by_the_reader(tmp_path):
    _checkpoint(tmp_path / "bp", 0)
    assert rdm.main([str(tmp_path), *STIMULI]) == 0
    (tmp_path / "results.zarr" / "rdm" / "rdm" / "c" / "0" / "0" / "0" / "0").unlink()
    with pytest.raises(
        store.DamagedStoreError, match="result 'rdm': array 'rdm', chunk c/0/0/0/0 is missing"
    ):
        store.open_results(tmp_path / "results.zarr")
