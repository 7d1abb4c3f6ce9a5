"""Linear probes against scikit-learn and numpy, on random data and on MNIST activations;
their mathematics (separable data, shuffled labels, least squares); batching; every error."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from repsim import datasets, store
from repsim.extract import extract, extract_to_zarr
from repsim.probes import SPLITS, classifier_probe, regressor_probe


def _layer(x, labels=None, index=None) -> xr.Dataset:
    n = len(x)
    coords = {"index": ("stimulus", np.arange(n) if index is None else index)}
    if labels is not None:
        coords["label"] = ("stimulus", np.asarray(labels, np.int64))
    return xr.Dataset({"activations": (("stimulus", "unit"), np.asarray(x, np.float32))}, coords)


def _run(layers: dict, labels=None) -> xr.DataTree:
    """One run, as repsim.extract.extract returns it."""
    nodes = {name: _layer(x, labels) for name, x in layers.items()}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs={"layers": list(layers)}), **nodes})


def _store(runs: dict[str, dict], labels: dict) -> xr.DataTree:
    """Several runs, as repsim.store.open_activations returns them."""
    nodes = {"/": xr.Dataset()}
    for run, layers in runs.items():
        nodes[f"/{run}"] = xr.Dataset(attrs={"run": run, "layers": list(layers)})
        for name, x in layers.items():
            nodes[f"/{run}/{name}"] = _layer(x, labels[run])
    return xr.DataTree.from_dict(nodes)


def _scaled(xtr, xte):
    """StandardScaler fitted on the train rows, in float64: the probes' preprocessing."""
    scaler = StandardScaler().fit(xtr.astype(np.float64))
    return scaler.transform(xtr.astype(np.float64)), scaler.transform(xte.astype(np.float64))


def _sk_accuracy(xtr, ytr, xte, yte, C, standardize=True):
    if standardize:
        xtr, xte = _scaled(xtr, xte)
    with threadpool_limits(1):  # on small problems threads only contend, many times slower
        model = LogisticRegression(C=C, tol=1e-8, max_iter=20_000).fit(xtr, ytr)
    return model.score(xtr, ytr), model.score(xte, yte)


def _sk_mse(xtr, ytr, xte, yte, alpha):
    xtr, xte = _scaled(xtr, xte)
    model = Ridge(alpha=alpha).fit(xtr, ytr.astype(np.float64))
    return (((model.predict(xtr) - ytr) ** 2).mean(), ((model.predict(xte) - yte) ** 2).mean())


def _blobs(seed, n, d, k, spread=1.0):
    """Gaussian classes around random centres: overlapping unless spread is small."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.permutation(np.arange(n) % k)
    return (centres[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


# ----------------------------------------------------------- real activations


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 32), nn.ReLU())  # fmt: skip


@pytest.fixture(scope="module")
def mnist_acts():
    """A small random-init MLP's layers on 1,000 MNIST train and 400 test digits."""
    train, test = datasets.select("mnist-5k:train:1000"), datasets.select("mnist-5k:test:400")
    net = _mlp(0)
    layers = ["1", "3", "5"]  # two widths: two batched groups
    tr = extract(
        net, train.inputs, layers, labels=train.labels, indices=train.indices, device="cpu"
    )
    te = extract(net, test.inputs, layers, labels=test.labels, indices=test.indices, device="cpu")
    return tr, te, train, test, layers


def test_classifier_matches_sklearn_on_mnist_activations(mnist_acts):
    tr, te, train, test, layers = mnist_acts
    acc = classifier_probe(tr, te, C=1.0, tol=1e-6, device="cpu")
    assert acc.name == "probe_accuracy" and acc.dims == ("run", "layer", "split")
    assert list(acc["layer"].values) == layers and list(acc["split"].values) == list(SPLITS)
    for layer in layers:
        want = _sk_accuracy(
            tr[layer]["activations"].values, train.labels.numpy(),
            te[layer]["activations"].values, test.labels.numpy(), C=1.0,
        )  # fmt: skip
        np.testing.assert_allclose(acc.sel(run="", layer=layer).values, want, atol=0.01)
    assert (acc.sel(split="test") > 0.5).all()  # a real signal, far above chance


def test_regressor_matches_sklearn_on_mnist_activations(mnist_acts):
    tr, te, train, test, layers = mnist_acts
    mse = regressor_probe(tr, te, train.inputs, test.inputs, alpha=1.0, device="cpu")
    assert mse.name == "probe_mse" and mse.dims == ("run", "layer", "split")
    for layer in layers:
        want = _sk_mse(
            tr[layer]["activations"].values, train.inputs.numpy(),
            te[layer]["activations"].values, test.inputs.numpy(), alpha=1.0,
        )  # fmt: skip
        # float32 Gram matrices and solves: far inside the 1 % asked for
        np.testing.assert_allclose(mse.sel(run="", layer=layer).values, want, rtol=1e-3)


def test_inputs_as_dataarrays_are_checked_by_index(mnist_acts):
    tr, te, train, test, _ = mnist_acts
    as_da = xr.DataArray(
        train.inputs.numpy().reshape(-1, 28, 28), dims=("stimulus", "row", "col"),
        coords={"index": ("stimulus", train.indices.numpy())},
    )  # fmt: skip
    a = regressor_probe(tr, te, as_da, test.inputs, device="cpu")
    b = regressor_probe(tr, te, train.inputs, test.inputs, device="cpu")
    xr.testing.assert_allclose(a, b)
    shuffled = as_da.isel(stimulus=np.random.default_rng(0).permutation(1000))
    with pytest.raises(ValueError, match=r"other stimuli, or in another order.*'index'"):
        regressor_probe(tr, te, shuffled, test.inputs, device="cpu")


def test_probes_of_stores_equal_probes_in_memory(mnist_acts, tmp_path):
    """Runs streamed to zarr stores and opened lazily (dask) give what the in-memory trees
    give; each run of the store is probed as its own tree is."""
    tr, te, train, test, layers = mnist_acts
    nets = {"bp": _mlp(0), "other": _mlp(1)}  # "bp" is the fixture's net
    for split, s in (("train", train), ("test", test)):
        for run, net in nets.items():
            extract_to_zarr(net, s.inputs, layers, tmp_path / f"{split}.zarr", run=run,
                            labels=s.labels, indices=s.indices, device="cpu")  # fmt: skip
    lazy_tr = store.open_activations(tmp_path / "train.zarr")
    lazy_te = store.open_activations(tmp_path / "test.zarr")
    acc = classifier_probe(lazy_tr, lazy_te, tol=1e-6, device="cpu")
    mse = regressor_probe(lazy_tr, lazy_te, train.inputs, test.inputs, device="cpu")
    assert list(acc["run"].values) == ["bp", "other"] == list(mse["run"].values)
    np.testing.assert_allclose(
        acc.sel(run="bp"), classifier_probe(tr, te, tol=1e-6, device="cpu").sel(run=""),
        atol=0.006,
    )  # fmt: skip
    np.testing.assert_allclose(
        mse.sel(run="bp"),
        regressor_probe(tr, te, train.inputs, test.inputs, device="cpu").sel(run=""),
        rtol=1e-5,
    )
    assert not np.allclose(acc.sel(run="bp"), acc.sel(run="other"))  # two nets, two results


# ----------------------------------------------------------- random data


@pytest.mark.parametrize(
    ("seed", "d", "k", "C"), [(0, 20, 3, 1.0), (1, 50, 10, 0.1), (2, 8, 2, 10.0)]
)
def test_classifier_matches_sklearn_on_random_data(seed, d, k, C):
    x, y = _blobs(seed, 600, d, k, spread=2.0)
    x[:, 0] *= 1e-3  # units of very different scales: standardisation matters
    x[:, 1] += 50.0
    tr, te = _run({"h": x[:400]}, y[:400]), _run({"h": x[400:]}, y[400:])
    for standardize in (True, False):
        acc = classifier_probe(tr, te, C=C, standardize=standardize, tol=1e-6, device="cpu")
        want = _sk_accuracy(x[:400], y[:400], x[400:], y[400:], C, standardize)
        np.testing.assert_allclose(acc.values[0, 0], want, atol=0.01)


def test_runs_with_different_classes_are_fitted_together_and_each_matches_sklearn():
    """Run b has two classes (scikit-learn's binary model), run a three; same widths, so one
    batch whose softmax masks the class that b lacks."""
    xa, ya = _blobs(3, 500, 10, 3, spread=2.5)
    xb, yb = _blobs(4, 500, 10, 2, spread=2.5)
    yb = np.where(yb == 1, 2, 0)  # classes 0 and 2: class 1 absent from b
    train = _store({"a": {"h": xa[:300]}, "b": {"h": xb[:300]}}, {"a": ya[:300], "b": yb[:300]})
    test = _store({"a": {"h": xa[300:]}, "b": {"h": xb[300:]}}, {"a": ya[300:], "b": yb[300:]})
    acc = classifier_probe(train, test, C=0.5, tol=1e-6, device="cpu")
    assert list(acc["run"].values) == ["a", "b"]
    for run, x, y in (("a", xa, ya), ("b", xb, yb)):
        want = _sk_accuracy(x[:300], y[:300], x[300:], y[300:], C=0.5)
        np.testing.assert_allclose(acc.sel(run=run, layer="h").values, want, atol=0.01)


def test_classifier_is_perfect_on_separable_data():
    x, y = _blobs(5, 900, 6, 4, spread=0.05)  # centres ~3 apart, spread 0.05: wide margins
    acc = classifier_probe(
        _run({"h": x[:300]}, y[:300]), _run({"h": x[300:]}, y[300:]), device="cpu"
    )
    np.testing.assert_array_equal(acc.values, 1.0)


def test_classifier_is_at_chance_on_shuffled_labels():
    """Features independent of the labels: each held-out prediction is right with
    probability 1/10, independently, so test accuracy is ~Binomial(4000, 0.1) / 4000:
    sd 0.0047, and 0.02 is > 4 sd (a false failure once in ~30,000 seeds)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4600, 100)).astype(np.float32)
    y = rng.permutation(np.arange(4600) % 10)
    acc = classifier_probe(
        _run({"h": x[:600]}, y[:600]), _run({"h": x[600:]}, y[600:]), device="cpu"
    )
    assert abs(acc.sel(split="test").item() - 0.1) < 0.02
    assert acc.sel(split="train").item() > 0.4  # it fits the noise it was shown


def test_batched_fits_equal_fits_one_layer_at_a_time():
    rng = np.random.default_rng(7)
    y = np.arange(300) % 3
    layers = {f"l{i}": rng.normal(size=(300, w)) + y[:, None] * 0.3 * i for i, w in
              enumerate([12, 12, 12, 7])}  # fmt: skip
    inputs = rng.normal(size=(300, 9))
    tr = _run({k: v[:200] for k, v in layers.items()}, y[:200])
    te = _run({k: v[200:] for k, v in layers.items()}, y[200:])
    acc = classifier_probe(tr, te, tol=1e-6, device="cpu")
    mse = regressor_probe(tr, te, inputs[:200], inputs[200:], device="cpu")
    for name, v in layers.items():
        one_tr, one_te = _run({name: v[:200]}, y[:200]), _run({name: v[200:]}, y[200:])
        alone = classifier_probe(one_tr, one_te, tol=1e-6, device="cpu")
        np.testing.assert_allclose(acc.sel(layer=name), alone.sel(layer=name), atol=0.011)
        alone = regressor_probe(one_tr, one_te, inputs[:200], inputs[200:], device="cpu")
        np.testing.assert_allclose(mse.sel(layer=name), alone.sel(layer=name), rtol=1e-5)


def test_a_layer_a_run_lacks_is_nan():
    rng = np.random.default_rng(8)
    y = np.arange(100) % 2
    x = {k: rng.normal(size=(100, 5)) for k in ("p", "q")}
    runs_tr = {"a": {"p": x["p"][:60], "q": x["q"][:60]}, "b": {"p": x["p"][:60]}}
    runs_te = {"a": {"p": x["p"][60:], "q": x["q"][60:]}, "b": {"p": x["p"][60:]}}
    labels_tr, labels_te = {"a": y[:60], "b": y[:60]}, {"a": y[60:], "b": y[60:]}
    acc = classifier_probe(_store(runs_tr, labels_tr), _store(runs_te, labels_te), device="cpu")
    assert list(acc["layer"].values) == ["p", "q"]
    assert np.isnan(acc.sel(run="b", layer="q")).all() and acc.sel(run="a").notnull().all()
    np.testing.assert_array_equal(acc.sel(run="a", layer="p"), acc.sel(run="b", layer="p"))


def test_ridge_without_penalty_is_least_squares_in_float64():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 15)) * rng.uniform(0.1, 10, size=15) + rng.normal(size=15)
    inputs = x[:, :4] @ rng.normal(size=(4, 6)) + rng.normal(size=(300, 6))
    xtr, xte, ytr, yte = x[:200], x[200:], inputs[:200], inputs[200:]
    design = np.hstack([xtr, np.ones((200, 1))]).astype(np.float32).astype(np.float64)
    coef = np.linalg.lstsq(design, ytr, rcond=None)[0]
    want = [
        ((design @ coef - ytr) ** 2).mean(),
        ((np.hstack([xte, np.ones((100, 1))]).astype(np.float32) @ coef - yte) ** 2).mean(),
    ]
    for standardize in (True, False):  # an invertible affine map of X: the same fit
        for alpha in (0.0, 1e-9):
            mse = regressor_probe(_run({"h": xtr}), _run({"h": xte}), ytr, yte, alpha=alpha,
                                  standardize=standardize, device="cpu")  # fmt: skip
            np.testing.assert_allclose(mse.values[0, 0], want, rtol=1e-5)


def test_wide_layers_match_sklearn():
    """300 units: the Gram matrix is assembled from blocks (and mirrored)."""
    x, y = _blobs(12, 700, 300, 5, spread=6.0)
    inputs = np.tanh(x[:, :20]) + 0.1 * np.random.default_rng(12).normal(size=(700, 20))
    tr, te = _run({"h": x[:500]}, y[:500]), _run({"h": x[500:]}, y[500:])
    acc = classifier_probe(tr, te, C=0.05, tol=1e-6, device="cpu")
    want = _sk_accuracy(x[:500], y[:500], x[500:], y[500:], C=0.05)
    np.testing.assert_allclose(acc.values[0, 0], want, atol=0.01)
    mse = regressor_probe(tr, te, inputs[:500], inputs[500:], alpha=3.0, device="cpu")
    want = _sk_mse(x[:500], inputs[:500], x[500:], inputs[500:], alpha=3.0)
    np.testing.assert_allclose(mse.values[0, 0], want, rtol=1e-4)


def test_ridge_matches_sklearn_on_random_data():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(250, 40)).astype(np.float32)
    x[:, 5] = 3.0  # a constant unit: centred, not scaled
    inputs = np.tanh(x @ rng.normal(size=(40, 12))) + 0.1 * rng.normal(size=(250, 12))
    for alpha in (0.1, 10.0):
        mse = regressor_probe(_run({"h": x[:150]}), _run({"h": x[150:]}), inputs[:150],
                              inputs[150:], alpha=alpha, device="cpu")  # fmt: skip
        want = _sk_mse(x[:150], inputs[:150], x[150:], inputs[150:], alpha)
        np.testing.assert_allclose(mse.values[0, 0], want, rtol=1e-4)


# ----------------------------------------------------------- errors


def _small(n=20, d=3, labels=True, seed=0):
    rng = np.random.default_rng(seed)
    return _run({"h": rng.normal(size=(n, d))}, np.arange(n) % 2 if labels else None)


def test_tree_errors():
    tr, te = _small(), _small()
    with pytest.raises(TypeError, match=r"train must be an activations tree .* got ndarray"):
        classifier_probe(np.zeros((3, 3)), te, device="cpu")
    with pytest.raises(ValueError, match=r"the train tree holds no layers"):
        classifier_probe(xr.DataTree(), te, device="cpu")
    other = _run({"h": np.zeros((20, 3)), "g": np.zeros((20, 3))}, np.arange(20) % 2)
    with pytest.raises(
        ValueError, match=r"same runs and layers; only in train: none; only in test: g"
    ):
        classifier_probe(tr, other, device="cpu")
    with pytest.raises(ValueError, match=r"layer 'h' has 3 units in train but 4 in test"):
        classifier_probe(tr, _small(d=4), device="cpu")
    wrong = _run({"h": np.zeros((20, 3))})
    wrong["h"] = wrong["h"].to_dataset().rename_dims(unit="neuron")
    with pytest.raises(ValueError, match=r"have dims \('stimulus', 'neuron'\), expected"):
        regressor_probe(tr, wrong, np.zeros((20, 2)), np.zeros((20, 2)), device="cpu")
    wide = _run({"h": np.zeros((2, 16_385))}, [0, 1])
    with pytest.raises(ValueError, match=r"layer 'h' has 16385 units; .* pool or subsample"):
        classifier_probe(wide, wide, device="cpu")
    bad = _small()
    bad["h"]["activations"][3, 1] = np.nan
    with pytest.raises(ValueError, match=r"test activations of layer 'h' contain NaN or inf"):
        classifier_probe(tr, bad, device="cpu")


def test_classifier_errors():
    tr, te = _small(), _small()
    with pytest.raises(
        ValueError, match=r"train activations of layer 'h' have no 'label' coordinate"
    ):
        classifier_probe(_small(labels=False), te, device="cpu")
    unknown = _run({"h": np.zeros((20, 3))}, np.full(20, -1))
    with pytest.raises(ValueError, match=r"test labels of layer 'h' must be non-negative integers"):
        classifier_probe(tr, unknown, device="cpu")
    one = _run({"h": np.random.default_rng(0).normal(size=(20, 3))}, np.zeros(20))
    with pytest.raises(ValueError, match=r"the train stimuli of layer 'h' hold one class"):
        classifier_probe(one, te, device="cpu")
    for kwargs, message in (
        ({"C": 0}, r"C must be a positive number"),
        ({"tol": -1.0}, r"tol must be a positive number"),
        ({"max_iter": 0}, r"max_iter must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=message):
            classifier_probe(tr, te, device="cpu", **kwargs)


def test_classifier_warns_when_it_stops_before_converging():
    x, y = _blobs(11, 200, 10, 3, spread=3.0)
    with pytest.warns(
        RuntimeWarning,
        match=r"layer 'h' did not converge within max_iter=2 iterations to tol=0\.0001",
    ):
        classifier_probe(_run({"h": x}, y), _run({"h": x}, y), max_iter=2, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier_probe(_run({"h": x}, y), _run({"h": x}, y), device="cpu")


def test_regressor_errors():
    tr, te = _small(), _small(n=10)
    y, yt = np.zeros((20, 4)), np.zeros((10, 4))
    with pytest.raises(ValueError, match=r"train_inputs hold 19 stimuli but the train activations of layer 'h' hold 20"):  # fmt: skip
        regressor_probe(tr, te, y[:19], yt, device="cpu")
    with pytest.raises(ValueError, match=r"test_inputs must be \[stimuli, pixels...\]"):
        regressor_probe(tr, te, y, np.zeros(10), device="cpu")
    with pytest.raises(ValueError, match=r"train_inputs have 4 elements per stimulus but test_inputs 5"):  # fmt: skip
        regressor_probe(tr, te, y, np.zeros((10, 5)), device="cpu")
    with pytest.raises(ValueError, match=r"test_inputs contain NaN or inf"):
        regressor_probe(tr, te, y, np.full((10, 4), np.inf), device="cpu")
    with pytest.raises(ValueError, match=r"alpha must be a non-negative number"):
        regressor_probe(tr, te, y, yt, alpha=-1.0, device="cpu")
    with pytest.raises(ValueError, match=r"alpha must be finite"):
        regressor_probe(tr, te, y, yt, alpha=float("inf"), device="cpu")
    few = _small(n=3, d=5)  # 3 stimuli, 5 units: XᵀX is singular
    with pytest.raises(ValueError, match=r"ridge system of layer 'h' is singular .* use alpha > 0"):
        regressor_probe(few, _small(n=10, d=5), np.zeros((3, 4)), yt, alpha=0.0, device="cpu")


# ------------------------------------------------------------------- command line


class External(torch.nn.Module):
    """A network from elsewhere: the command line must probe it from its weights file."""

    def __init__(self, hidden: int = 12) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, hidden)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_the_command_probes_external_weights(tmp_path, capsys):
    from safetensors.torch import save_file

    from repsim import store
    from repsim.probes import main

    torch.manual_seed(0)
    save_file(External().state_dict(), str(tmp_path / "ext.safetensors"))
    argv = [str(tmp_path / "ext.safetensors"), "--model", "tests.repsim.test_probes:External",
            "--layers", "fc1,act", "--train-stimuli", "mnist-5k:train:300",
            "--test-stimuli", "mnist-5k:test:100", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "held-out probe accuracy" in capsys.readouterr().out
    results = store.open_results(tmp_path / "results.zarr")
    acc, mse = results["probe_accuracy"], results["probe_mse"]
    assert acc.dims == ("run", "layer", "split") and acc["run"].values.tolist() == ["ext"]
    assert acc["layer"].values.tolist() == ["fc1", "act"] and acc["split"].values.tolist() == [
        "train",
        "test",
    ]
    assert ((acc > 0.2) & (acc <= 1)).all()  # far above chance: random features of digits
    assert (mse > 0).all() and mse.attrs["test_stimuli"] == "mnist-5k:test:100"
    assert (
        store.open_activations(tmp_path / "probes-train.zarr")["ext"]["fc1"]["activations"].sizes[
            "stimulus"
        ]
        == 300
    )
    png = (tmp_path / "figures" / "probes.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_the_command_reports_bad_input(tmp_path, capsys):
    from repsim.probes import main

    assert main([str(tmp_path), "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
