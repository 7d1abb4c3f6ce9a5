"""RDMs against float64 references (np.corrcoef, scipy pdist), their symmetries, the
zero-variance rule, diagonal L2 by hand and under shuffling, and the command line."""

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from repsim import checkpoints, store
from repsim.extract import extract
from repsim.rdm import diag_l2, main, rdm


def _acts(n=30, d=12, seed=0, layers=None):
    rng = np.random.default_rng(seed)
    shape = (n, d) if layers is None else (layers, n, d)
    dims = ("stimulus", "unit") if layers is None else ("layer", "stimulus", "unit")
    coords = {
        "label": ("stimulus", np.sort(rng.integers(0, 4, n))),
        "index": ("stimulus", rng.permutation(1000)[:n]),
    }
    if layers is not None:
        coords["layer"] = [f"l{i}" for i in range(layers)]
    return xr.DataArray(
        rng.normal(size=shape).astype(np.float32) * rng.uniform(0.1, 10), dims=dims, coords=coords
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("metric", "scipy_metric"),
    [("correlation", "correlation"), ("cosine", "cosine"), ("euclidean", "euclidean")],
)
def test_rdm_matches_float64_references_on_random_data(seed, metric, scipy_metric):
    acts = _acts(seed=seed, n=40, d=7 + seed * 13)
    want = squareform(pdist(acts.values.astype(np.float64), scipy_metric))
    got = rdm(acts, metric=metric)
    assert got.dims == ("stimulus", "stimulus_") and got.dtype == np.float32
    np.testing.assert_allclose(got.values, want, atol=1e-5, rtol=0)
    if metric == "correlation":
        np.testing.assert_allclose(
            got.values, 1 - np.corrcoef(acts.values.astype(np.float64)), atol=1e-5
        )
    assert np.array_equal(got.values, got.values.T) and not np.diag(got.values).any()
    assert got["label_"].values.tolist() == acts["label"].values.tolist()
    assert got["index_"].values.tolist() == acts["index"].values.tolist()


def test_rdm_matches_on_real_activations():
    from repsim import datasets
    from training.model import MLP

    torch.manual_seed(0)
    net = MLP(depth=3, width=64)
    s = datasets.paper_stimuli()
    tree = extract(
        net, s.inputs, ["block1", "block3"], labels=s.labels, indices=s.indices, device="cpu"
    )
    for layer in ("block1", "block3"):
        a = tree[layer]["activations"]
        keep = a.values.std(axis=1) > 0  # scipy is NaN on silent stimuli; compare the rest
        want = squareform(pdist(a.values[keep].astype(np.float64), "correlation"))
        got = rdm(a).values[np.ix_(keep, keep)]
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_rdm_is_equivariant_to_stimulus_order_and_invariant_to_unit_order(seed):
    acts = _acts(seed=seed)
    rng = np.random.default_rng(seed + 10)
    p, q = rng.permutation(acts.sizes["stimulus"]), rng.permutation(acts.sizes["unit"])
    base = rdm(acts).values
    np.testing.assert_allclose(rdm(acts.isel(stimulus=p)).values, base[np.ix_(p, p)], atol=1e-6)
    np.testing.assert_allclose(rdm(acts.isel(unit=q)).values, base, atol=1e-6)


def test_zero_variance_stimuli_are_uncorrelated_with_everything_and_counted():
    acts = _acts(n=10)
    acts[3] = 0.0  # a stimulus that silences every unit
    acts[7] = 2.5  # a constant, non-zero response
    with pytest.warns(UserWarning, match=r"^2 stimulus activation\(s\) are constant over units"):
        r = rdm(acts).values
    assert not np.isnan(r).any()
    for i in (3, 7):
        assert r[i, i] == 0
        np.testing.assert_array_equal(np.delete(r[i], i), 1.0)
        np.testing.assert_array_equal(np.delete(r[:, i], i), 1.0)
    other = [i for i in range(10) if i not in (3, 7)]
    want = squareform(pdist(acts.values[other].astype(np.float64), "correlation"))
    np.testing.assert_allclose(r[np.ix_(other, other)], want, atol=1e-5)
    with pytest.warns(UserWarning, match=r"^1 stimulus"):
        rdm(acts, metric="cosine")  # only the all-zero row has no direction


def test_stacked_layers_and_trees_give_the_per_layer_result():
    stacked = _acts(layers=3, d=9)
    r = rdm(stacked)
    assert r.dims == ("layer", "stimulus", "stimulus_")
    for i in range(3):
        np.testing.assert_allclose(r.values[i], rdm(stacked.isel(layer=i)).values, atol=1e-6)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    tree = extract(net, torch.randn(20, 5), ["0", "2"], labels=np.arange(20) % 4, device="cpu")
    r = rdm(tree)
    assert r.dims == ("run", "layer", "stimulus", "stimulus_") and r["layer"].values.tolist() == [
        "0",
        "2",
    ]
    np.testing.assert_allclose(
        r.sel(layer="2").values[0], rdm(tree["2"]["activations"]).values, atol=1e-6
    )


def test_bad_rdm_input_is_explained():
    with pytest.raises(ValueError, match=r"unknown metric 'pearson'.*'correlation'"):
        rdm(_acts(), metric="pearson")
    with pytest.raises(ValueError, match=r"needs a DataArray with dims \('stimulus', 'unit'\)"):
        rdm(_acts().rename(unit="neuron"))


def _hand_rdms():
    """Two layers over 4 stimuli in classes [0, 0, 1, 1]."""
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[0, 1] = a[1, 0] = 0.5
    a[2, 3] = a[3, 2] = 0.2
    a[0, 2] = a[2, 0] = 0.9  # between classes: ignored
    b[0, 1] = b[1, 0] = 0.1
    b[2, 3] = b[3, 2] = 0.6
    coords = {"layer": ["a", "b"], "label": ("stimulus", [0, 0, 1, 1]), "label_": ("stimulus_", [0, 0, 1, 1]),
              "index": ("stimulus", [5, 6, 7, 8]), "index_": ("stimulus_", [5, 6, 7, 8])}  # fmt: skip
    return xr.DataArray(np.stack([a, b]), dims=("layer", "stimulus", "stimulus_"), coords=coords)


def test_diag_l2_on_a_hand_computed_example():
    d = diag_l2(_hand_rdms())
    want = np.sqrt(2 * (0.5 - 0.1) ** 2 + 2 * (0.2 - 0.6) ** 2)
    np.testing.assert_allclose(d.values, [want, 0.0])
    np.testing.assert_allclose(diag_l2(_hand_rdms(), reference="a").values, [0.0, want])


@pytest.mark.parametrize("seed", range(3))
def test_diag_l2_does_not_depend_on_stimulus_order(seed):
    stacked = _acts(layers=4, seed=seed)
    r = rdm(stacked)
    p = np.random.default_rng(seed).permutation(r.sizes["stimulus"])
    shuffled = r.isel(stimulus=p, stimulus_=p)
    np.testing.assert_allclose(diag_l2(shuffled).values, diag_l2(r).values, rtol=1e-6)
    ref = r.isel(layer=1).drop_vars("layer").isel(stimulus=p, stimulus_=p)  # matched by index
    np.testing.assert_allclose(
        diag_l2(r, reference=ref).values, diag_l2(r, reference="l1").values, rtol=1e-6
    )


def test_diag_l2_refuses_other_stimuli_and_bad_references():
    r = _hand_rdms()
    other = (
        r.isel(layer=0)
        .drop_vars("layer")
        .assign_coords(index=("stimulus", [1, 2, 3, 4]), index_=("stimulus_", [1, 2, 3, 4]))
    )
    with pytest.raises(ValueError, match=r"over other stimuli than the RDMs"):
        diag_l2(r, reference=other)
    with pytest.raises(ValueError, match=r"reference must be 'last', a layer \(a, b\)"):
        diag_l2(r, reference="c")
    with pytest.raises(ValueError, match=r"coordinate 'label'"):
        diag_l2(r.drop_vars("label"))


def test_diag_l2_last_is_each_runs_last_present_layer():
    r = xr.concat([_hand_rdms(), _hand_rdms()], dim=xr.DataArray(["deep", "shallow"], dims="run"))
    r = r.copy()
    r.loc[{"run": "shallow", "layer": "b"}] = np.nan  # the shallow run has no layer b
    d = diag_l2(r)
    assert d.sel(run="shallow", layer="a").item() == 0.0
    assert np.isnan(d.sel(run="shallow", layer="b").item())
    assert d.sel(run="deep", layer="b").item() == 0.0


def _our_checkpoint(path, seed=0):
    from training.model import MLP

    torch.manual_seed(seed)
    model = MLP(depth=3, width=8)
    checkpoints.save(path, {"model": {"factory": "training.model:MLP", "kwargs": {"depth": 3, "width": 8}},
                            "layers": model.layer_names, "dataset": "mnist-5k",
                            "method": {"name": "sg", "sg_layers": [2]}}, model.state_dict())  # fmt: skip


def test_the_command_writes_results_and_figures(tmp_path, capsys):
    for i, name in enumerate(["bp", "sg"]):
        _our_checkpoint(tmp_path / name, seed=i)
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:40"]) == 0
    out = capsys.readouterr().out
    assert "diagonal L2 to the last layer" in out and "block3" in out
    results = store.open_results(tmp_path / "results.zarr")
    assert results["rdm"].dims == ("run", "layer", "stimulus", "stimulus_")
    assert results["rdm"].sizes == {"run": 2, "layer": 3, "stimulus": 40, "stimulus_": 40}
    assert results["run"].values.tolist() == ["bp", "sg"]
    assert results["layer"].values.tolist() == ["block1", "block2", "block3"]
    assert results["diag_l2"].dims == ("run", "layer")
    assert (results["diag_l2"].sel(layer="block3") == 0).all()
    assert results["rdm"].attrs["metric"] == "correlation"
    acts = store.open_activations(tmp_path / "activations.zarr")
    np.testing.assert_allclose(results["rdm"].sel(run="sg", layer="block2").values,
                               rdm(acts["sg"]["block2"]["activations"].compute()).values, atol=1e-6)  # fmt: skip
    for name in ("rdm.png", "diag_l2.png"):
        png = (tmp_path / "figures" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_the_command_reports_bad_input(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(("n", "block"), [(23, 7), (21, 7), (5, 16)])
def test_the_blocked_kernel_fills_and_mirrors_every_block(n, block):
    from repsim import rdm as module

    x = torch.randn(3, n, 6, dtype=torch.float64)
    got = module._symmetric_pairs(x, module._one_minus_dot, block=block)
    want = 1 - x @ x.transpose(-1, -2)
    want.diagonal(dim1=-2, dim2=-1).zero_()
    torch.testing.assert_close(got, want)
    assert torch.equal(got, got.transpose(-1, -2))


class External(torch.nn.Module):
    """A network trained elsewhere: the command must work from its weights file alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 10)
        self.fc2 = torch.nn.Linear(10, 6)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_the_command_on_external_weights(tmp_path, capsys):
    torch.manual_seed(0)
    net = External()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    argv = [str(tmp_path / "net.pt"), "--model", "tests.repsim.test_rdm:External", "--layers", "fc1,fc2",
            "--stimuli", "mnist-5k:test:30", "--metric", "cosine", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "cosine RDMs over 30 stimuli" in capsys.readouterr().out
    results = store.open_results(tmp_path / "results.zarr")
    assert results["rdm"].sizes == {"run": 1, "layer": 2, "stimulus": 30, "stimulus_": 30}
    assert results["rdm"].attrs["metric"] == "cosine"
    from repsim import datasets

    chosen = datasets.select("mnist-5k:test:30")
    with torch.no_grad():
        h = net.fc1(chosen.inputs).double().numpy()
    np.testing.assert_allclose(
        results["rdm"].sel(run="net", layer="fc1").values, squareform(pdist(h, "cosine")), atol=1e-5
    )
    assert results["label"].values.tolist() == chosen.labels.tolist()
    assert (tmp_path / "figures" / "rdm.png").read_bytes().startswith(b"\x89PNG")
