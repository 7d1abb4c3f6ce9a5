"""python -m repsim.report: every analysis into one results store, every figure drawn,
and adding an analysis keeps the others' results."""

import numpy as np
import torch

from repsim import checkpoints, store
from repsim.report import main


def _checkpoint(path, seed, sg_layers=()):
    from training.model import MLP

    torch.manual_seed(seed)
    model = MLP(depth=3, width=8)
    history = [
        {"epoch": e, "train_accuracy": 0.5 + 0.1 * e, "test_accuracy": 0.4 + 0.1 * e}
        for e in (1, 2, 3)
    ]
    checkpoints.save(
        path,
        {"model": {"factory": "training.model:MLP", "kwargs": {"depth": 3, "width": 8}},
         "layers": model.layer_names, "dataset": "mnist-5k",
         "layer_weights": {n: f"{n}.linear.weight" for n in model.layer_names},
         "method": {"name": "sg" if sg_layers else "bp", "sg_layers": list(sg_layers)}},
        model.state_dict(), history=history,
    )  # fmt: skip
    return model


def test_the_report_runs_every_analysis_and_draws_every_figure(tmp_path, capsys):
    models = {
        "bp": _checkpoint(tmp_path / "bp", 0),
        "sg": _checkpoint(tmp_path / "sg", 1, sg_layers=[2]),
    }
    argv = [str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:40"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "diagonal L2" in out and "probe accuracy" in out and "normalised weight norm" in out
    assert "cka:linear: best-matching layer of bp" in out
    results = store.open_results(tmp_path / "results.zarr")
    assert set(results.data_vars) == {
        "rdm",
        "diag_l2",
        "probe_accuracy",
        "probe_mse",
        "weight_norm",
        "similarity_cka_linear",
        "similarity_cka_linear_init",
        "best_layer_cka_linear",
        "best_score_cka_linear",
    }
    sim = results["similarity_cka_linear"]
    assert sim.dims == ("run", "layer", "run_", "layer_")
    for run in ("bp", "sg"):  # every layer is itself, through the whole pipeline
        np.testing.assert_allclose(np.diag(sim.sel(run=run, run_=run).values), 1.0, atol=1e-6)
    assert results["probe_accuracy"].dims == ("run", "layer", "split")
    assert results["probe_mse"].sizes == {"run": 2, "layer": 3, "split": 2}
    assert results["weight_norm"].dims == ("run", "layer")
    np.testing.assert_allclose(results["weight_norm"].sum("layer").values, [1.0, 1.0])
    w = [models["sg"].get_submodule(f"block{k}").linear.weight.detach().double() for k in (1, 2, 3)]
    sq = np.array([float((x * x).sum()) for x in w])
    np.testing.assert_allclose(
        results["weight_norm"].sel(run="sg").values, sq / sq.sum(), rtol=1e-12
    )
    assert results["probe_accuracy"].attrs["train_stimuli"] == "mnist-5k:train:all"
    assert results["rdm"].attrs["metric"] == "correlation"
    for name in (
        "rdm",
        "diag_l2",
        "probes",
        "weight_norm",
        "learning_curves",
        "compare_cka_linear",
    ):
        png = (tmp_path / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name


def test_adding_one_analysis_keeps_the_others(tmp_path):
    from repsim import norms, rdm

    _checkpoint(tmp_path / "bp", 0)
    assert rdm.main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:20"]) == 0
    before = store.open_results(tmp_path / "results.zarr")["diag_l2"].values
    assert norms.main([str(tmp_path), "--quiet"]) == 0
    results = store.open_results(tmp_path / "results.zarr")
    assert set(results.data_vars) == {"rdm", "diag_l2", "weight_norm"}
    np.testing.assert_array_equal(results["diag_l2"].values, before)
