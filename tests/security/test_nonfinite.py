"""Non-finite activations get one policy in every analysis: refused, naming run and layer."""

import numpy as np
import pytest
import torch
import xarray as xr

from repsim import checkpoints, extract, norms, probes, rdm, store

STIMULI = ["--quiet", "--stimuli", "mnist-5k:test:40"]


def _nan_checkpoint(path, layer="block2"):
    from training.model import MLP

    torch.manual_seed(0)
    model = MLP(depth=3, width=8)
    with torch.no_grad():
        model.get_submodule(layer).linear.weight[0, 0] = float("nan")
    checkpoints.save(
        path,
        {"model": {"factory": "training.model:MLP", "kwargs": {"depth": 3, "width": 8}},
         "layers": model.layer_names, "dataset": "mnist-5k",
         "layer_weights": {n: f"{n}.linear.weight" for n in model.layer_names}},
        model.state_dict(),
    )  # fmt: skip


def _tree(bad_layer="b", value=np.nan):
    rng = np.random.default_rng(0)
    acts = {layer: rng.standard_normal((20, 5)).astype(np.float32) for layer in ("a", "b")}
    acts[bad_layer][3, 1] = value
    nodes = {
        f"/bp/{layer}": xr.Dataset(
            {"activations": (("stimulus", "unit"), x)},
            coords={"label": ("stimulus", np.arange(20) % 2), "index": ("stimulus", np.arange(20))},
        )
        for layer, x in acts.items()
    }
    tree = xr.DataTree.from_dict(nodes)
    tree["bp"].attrs.update(run="bp", layers=["a", "b"])
    return tree


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_rdm_refuses_non_finite_activations_by_run_and_layer(value):
    with pytest.raises(
        ValueError, match=r"layer 'b' of run 'bp': 1 of 100 activations are NaN or inf"
    ):
        rdm.rdm(_tree(value=value))
    with pytest.raises(ValueError, match="1 of 100 activations are NaN or inf"):
        rdm.rdm(_tree()["bp"]["b"]["activations"])


def test_probes_refuse_non_finite_activations_by_run_and_layer():
    with pytest.raises(ValueError, match=r"layer 'b' of run 'bp' contain NaN or inf"):
        probes.classifier_probe(_tree(), _tree(bad_layer="a", value=0.0))


def test_the_writer_records_which_layers_are_non_finite(tmp_path):
    _nan_checkpoint(tmp_path / "nan")
    model, info = checkpoints.load(tmp_path / "nan")
    x = torch.rand(30, 784)
    got = extract.extract_to_zarr(
        model, x, info.layers, tmp_path / "a.zarr", run="nan", device="cpu"
    )
    assert got.tree.attrs["nonfinite_layers"] == ["block2", "block3"]


@pytest.mark.parametrize("command", [rdm.main, probes.main])
def test_the_analyses_refuse_nan_weights_in_one_line(tmp_path, capsys, command):
    _nan_checkpoint(tmp_path / "nan")
    argv = [str(tmp_path), *STIMULI]
    if command is probes.main:  # the probes' stimuli are their own two options
        argv = [str(tmp_path), "--quiet", "--train-stimuli", "mnist-5k:train:100",
                "--test-stimuli", "mnist-5k:test:40"]  # fmt: skip
    assert command(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "run 'nan': activations of layer(s) block2, block3 are NaN or inf" in err
    if command is rdm.main:
        assert not (tmp_path / "results.zarr" / "rdm").exists()  # nothing stored as a result


def test_norms_refuse_nan_weights_naming_run_and_layer(tmp_path, capsys):
    _nan_checkpoint(tmp_path / "nan")
    assert norms.main([str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nan: the weight 'block2.linear.weight' of layer 'block2' holds NaN or inf" in err
    assert "Traceback" not in err


def test_the_extract_command_stores_non_finite_runs_and_says_so(tmp_path, capsys):
    _nan_checkpoint(tmp_path / "nan")
    assert extract.main([str(tmp_path), *STIMULI]) == 0
    assert (
        "note: nan: layer(s) block2, block3 hold NaN or inf activations" in capsys.readouterr().err
    )
    acts = store.open_activations(tmp_path / "activations.zarr")["nan"]["block3"]["activations"]
    assert np.isnan(acts.values).any()
