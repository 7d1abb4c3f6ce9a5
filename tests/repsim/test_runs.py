"""repsim.runs: each network loaded and hashed once, and the runs-level analyses on runs
built in Python equal the numerical functions applied by hand."""

import numpy as np
import pytest
import torch
import xarray as xr

from repsim import checkpoints, datasets, norms, probes, rdm, report, runs, store, weights
from repsim.extract import extract
from repsim.names import LAYER, RUN, SG_LAYERS, SPLIT
from tests.repsim.test_report import _checkpoint

STIMULI = "mnist-5k:test:40"


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_report_loads_and_hashes_each_checkpoint_once(tmp_path, monkeypatch):
    for seed, name in enumerate(("bp", "dfa", "sg-full", "sg-single")):
        _checkpoint(tmp_path / name, seed, sg_layers=[2] if name.startswith("sg") else ())
    loads = _counting(monkeypatch, checkpoints, "load")
    hashes = _counting(monkeypatch, weights, "weights_sha256")
    # --no-baseline: the comparison's untrained copies are new networks, hashed when made
    argv = [
        str(tmp_path),
        "--quiet",
        "--stimuli",
        STIMULI,
        "--test-stimuli",
        STIMULI,
        "--no-baseline",
    ]
    assert report.main(argv) == 0
    assert sorted(p.name for p in loads) == ["bp", "dfa", "sg-full", "sg-single"]
    assert len(hashes) == 4  # by checkpoints.load; extraction reuses CheckpointInfo's hash
    results = store.open_results(tmp_path / "results.zarr")
    assert results["diag_l2"].attrs[SG_LAYERS] == {
        "bp": [], "dfa": [], "sg-full": ["block2"], "sg-single": ["block2"]
    }  # fmt: skip


def test_discover_names_runs_and_reports_the_ones_it_cannot_load(tmp_path):
    _checkpoint(tmp_path / "bp", 0)
    _checkpoint(tmp_path / "sg", 1, sg_layers=[2])
    _checkpoint(tmp_path / "broken", 2)
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not a safetensors file")
    failed = []
    found = runs.discover(tmp_path, on_error=lambda run, err: failed.append(run))
    assert [r.name for r in found] == ["bp", "sg"] and failed == ["broken"]
    assert found[1].layers == ("block1", "block2", "block3")
    assert found[1].sg_layers == ["block2"] and found[0].sg_layers == []
    assert found[0].stimuli() == "mnist-5k:test:400"
    assert found[0].stimuli("{dataset}:train:all") == "mnist-5k:train:all"
    assert runs.sg_marks(found) == {"bp": [], "sg": ["block2"]}
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        runs.discover(tmp_path)


def test_no_checkpoint_under_a_directory_is_refused(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint \(a directory with checkpoint.json\)"
    ):
        runs.discover(tmp_path)


def test_from_model_checks_its_layers():
    net = torch.nn.Sequential(torch.nn.Linear(784, 8), torch.nn.ReLU())
    run = runs.from_model(net, ["0", "1"], name="tiny", sg_layers=["0"])
    assert run.sg_layers == ["0"] and run.info.weights_sha256 == checkpoints.weights_sha256(net)
    with pytest.raises(ValueError, match="non-empty list of module names"):
        runs.from_model(net, "0")
    with pytest.raises(ValueError, match=r"sg_layers \['2'\] are not among the layers"):
        runs.from_model(net, ["0"], sg_layers=["2"])


def _nets():
    torch.manual_seed(0)
    return {
        name: torch.nn.Sequential(
            torch.nn.Linear(784, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU()
        )
        for name in ("a", "b")
    }


def test_the_runs_level_analyses_equal_the_numerical_functions(tmp_path):
    nets = _nets()
    layers = ["0", "1", "3"]
    held = [runs.from_model(net, layers, name=name) for name, net in nets.items()]
    s = datasets.select(STIMULI)
    trees = {}
    for name, net in nets.items():
        trees[f"/{name}"] = extract(
            net, s.inputs, layers, labels=s.labels, indices=s.indices, device="cpu"
        )
        trees[f"/{name}"].attrs.update(run=name)
    by_hand = xr.DataTree.from_dict(trees)
    expected = rdm.rdm(by_hand, device="cpu")
    for cache in (None, tmp_path):  # in memory, and through a store
        got = rdm.analyse(held, stimuli=STIMULI, device="cpu", cache=cache)
        xr.testing.assert_equal(got["rdm"].drop_attrs(), expected.drop_attrs())
        xr.testing.assert_equal(got["diag_l2"].drop_attrs(), rdm.diag_l2(expected).drop_attrs())
        assert got["rdm"].attrs["stimuli"] == STIMULI
    fits = probes.analyse(
        held, train_stimuli="mnist-5k:train:200", test_stimuli=STIMULI, device="cpu"
    )
    assert fits["probe_accuracy"].dims == (RUN, LAYER, SPLIT)
    assert fits["probe_mse"].attrs["train_stimuli"] == "mnist-5k:train:200"
    linear = [runs.from_model(net, ["0", "2"], name=name) for name, net in nets.items()]
    weights = norms.analyse(linear)["weight_norm"]
    assert weights.dims == (RUN, LAYER)
    np.testing.assert_allclose(weights.sum(LAYER).values, [1.0, 1.0])
    w = [nets["a"][i].weight.detach().double() for i in (0, 2)]
    sq = np.array([float((x * x).sum()) for x in w])
    np.testing.assert_allclose(weights.sel({RUN: "a"}).values, sq / sq.sum())


def test_every_run_failing_is_nothing_analysed():
    net = torch.nn.Sequential(torch.nn.Linear(784, 4))
    with torch.no_grad():
        net[0].weight.fill_(float("nan"))
    held = [runs.from_model(net, ["0"], name="nan")]
    failed = []
    with pytest.raises(runs.NothingAnalysed, match=r"no run could be analysed \(1 failed\)"):
        rdm.analyse(held, stimuli=STIMULI, device="cpu", on_error=lambda r, e: failed.append(r))
    with pytest.raises(runs.NothingAnalysed, match=r"no run could be analysed \(1 failed\)"):
        norms.analyse(held, on_error=lambda r, e: failed.append(r))
    assert failed == ["nan", "nan"]
    with pytest.raises(ValueError, match=r"activations of layer\(s\) 0 are NaN or inf"):
        rdm.analyse(held, stimuli=STIMULI, device="cpu")
