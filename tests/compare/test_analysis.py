"""Comparisons of runs: the whole pipeline (extraction, measures, inference, baseline) on
tiny networks, checked against a manual forward pass; the untrained baseline; the command
line and its figure."""

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from repsim import checkpoints, compare, datasets, plots, runs, store
from repsim.compare.analysis import _reference
from tests.compare.test_measures import _hsic_unbiased

STIMULI = "mnist-5k:test:40"


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())


def _cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return _hsic_unbiased(k, l) / np.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(l, l))


@pytest.fixture(scope="module")
def tiny():
    """Runs ``a`` and ``b`` (one network, loaded twice) and ``c`` (another), and what
    :func:`repsim.compare.analyse` makes of them with every option on."""
    net = _net(0)
    nets = [
        runs.from_model(net, ["1", "3"], name="a"),
        runs.from_model(copy.deepcopy(net), ["1", "3"], name="b"),
        runs.from_model(_net(1), ["1", "3"], name="c"),
    ]
    results = compare.analyse(
        nets, stimuli=STIMULI, bootstrap=5, permutations=5, keep_samples=True, device="cpu"
    )
    return nets, results


def test_analyse_returns_every_result_with_its_dims(tiny):
    _, results = tiny
    assert set(results.data_vars) == {
        "similarity_cka_linear",
        "best_layer_cka_linear",
        "best_score_cka_linear",
        "similarity_cka_linear_ci",
        "similarity_cka_linear_resample",
        "similarity_cka_linear_p",
        "similarity_cka_linear_init",
        "diag_l2_ci",
    }
    sim = results["similarity_cka_linear"]
    assert sim.dims == ("run", "layer", "run_", "layer_") and sim.shape == (3, 2, 3, 2)
    assert list(sim["run"].values) == list(sim["run_"].values) == ["a", "b", "c"]
    assert list(sim["layer"].values) == list(sim["layer_"].values) == ["1", "3"]
    assert results["best_layer_cka_linear"].dims == ("run", "layer", "run_")
    assert results["similarity_cka_linear_ci"].dims == ("quantile", *sim.dims)
    assert results["similarity_cka_linear_resample"].sizes["resample"] == 5
    assert results["diag_l2_ci"].dims == ("quantile", "run", "layer")
    assert sim.attrs["runs"] == ["a", "b", "c"] and sim.attrs["stimuli"] == STIMULI
    assert sim.attrs["measure"] == "cka:linear" and sim.attrs["kind"] == "similarity"


def test_analyse_equals_cka_of_a_manual_forward_pass(tiny):
    nets, results = tiny
    inputs = datasets.select(STIMULI).inputs.double()
    hidden = {}
    for run in nets:
        net = copy.deepcopy(run.model).double()
        h1 = net[1](net[0](inputs))
        hidden[run.name] = {"1": h1.detach().numpy(), "3": net[3](net[2](h1)).detach().numpy()}
    sim = results["similarity_cka_linear"]
    for ra in ("a", "c"):
        for rb in ("a", "c"):
            for la in ("1", "3"):
                for lb in ("1", "3"):
                    want = _cka(hidden[ra][la], hidden[rb][lb])
                    got = sim.sel(run=ra, layer=la, run_=rb, layer_=lb).item()
                    assert got == pytest.approx(want, abs=1e-5), (ra, la, rb, lb)


def test_a_network_compared_with_itself_across_the_whole_pipeline_scores_one(tiny):
    _, results = tiny
    sim = results["similarity_cka_linear"]
    for run in ("a", "b", "c"):
        np.testing.assert_allclose(np.diag(sim.sel(run=run, run_=run).values), 1.0, atol=1e-6)
    for same in ("1", "3"):  # the same network loaded under two names
        assert sim.sel(run="a", run_="b", layer=same, layer_=same).item() == pytest.approx(
            1, abs=1e-6
        )
    np.testing.assert_allclose(
        sim.sel(run="a", run_="b").values, sim.sel(run="a", run_="a").values, atol=1e-6
    )
    assert sim.sel(run="a", run_="c", layer="3", layer_="3").item() < 0.99  # another init
    best = results["best_layer_cka_linear"].sel(run="a", run_="b")
    assert list(best.values) == ["1", "3"]
    np.testing.assert_allclose(
        results["best_score_cka_linear"].sel(run="a", run_="b").values, 1.0, atol=1e-5
    )
    p = results["similarity_cka_linear_p"].sel(run="a", run_="b")
    np.testing.assert_allclose(np.diag(p.values), 1 / 6)  # 5 permutations, none as good
    ci = results["similarity_cka_linear_ci"].sel(run="a", run_="b", layer="1", layer_="1")
    np.testing.assert_allclose(ci.values, 1.0, atol=1e-5)
    l2 = results["diag_l2_ci"]
    np.testing.assert_allclose(l2.sel(run="a").values, l2.sel(run="b").values)
    assert (l2.sel(layer="3").values == 0).all()  # the last layer is its own reference


def test_the_untrained_baseline_resets_each_run_with_its_own_seed(tiny):
    _, results = tiny
    init, sim = results["similarity_cka_linear_init"], results["similarity_cka_linear"]
    assert init.dims == sim.dims
    np.testing.assert_allclose(np.diag(init.sel(run="a", run_="a").values), 1.0, atol=1e-6)
    # a and b are one trained network but get seeds 0 and 1: their untrained copies differ
    assert init.sel(run="a", run_="b", layer="3", layer_="3").item() < 0.99
    assert not np.allclose(init.values, sim.values, atol=1e-3)


def test_analyse_keeps_the_bootstrap_samples_only_on_request(tiny):
    nets, _ = tiny
    results = compare.analyse(
        nets[:2], measure="rsa:spearman", stimuli=STIMULI, bootstrap=3, baseline=False,
        device="cpu",
    )  # fmt: skip
    assert set(results.data_vars) == {
        "similarity_rsa_spearman",
        "best_layer_rsa_spearman",
        "best_score_rsa_spearman",
        "similarity_rsa_spearman_ci",
        "diag_l2_ci",
    }


def test_compare_grid_draws_the_results(tiny, tmp_path):
    _, results = tiny
    fig = plots.compare_grid(results, "cka_linear", reference="a")
    try:
        assert len(fig.axes) >= 9 + 1  # a 3 × 3 grid of rules and the per-layer panel
        fig.savefig(tmp_path / "grid.png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------- untrained


def test_untrained_resets_every_weight_reproducibly_and_leaves_the_run_alone():
    run = runs.from_model(_net(0), ["1", "3"], name="bp")
    trained = {k: v.clone() for k, v in run.model.state_dict().items()}
    state = torch.get_rng_state()
    fresh, again, other = (runs.untrained(run, s) for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    for k, v in fresh.model.state_dict().items():
        assert not torch.equal(v, trained[k]), k
        assert torch.equal(v, again.model.state_dict()[k]), k
        assert not torch.equal(v, other.model.state_dict()[k]), k
        assert torch.equal(run.model.state_dict()[k], trained[k]), k
    assert fresh.name == "bp" and fresh.layers == run.layers and not fresh.model.training
    assert fresh.info.weights_sha256 == again.info.weights_sha256 != run.info.weights_sha256
    torch.manual_seed(3)  # untrained(run, seed) is nn.Linear's initialisation under seed
    assert torch.equal(fresh.model[0].weight, nn.Linear(784, 16).weight)


def test_untrained_resets_batchnorm_running_statistics():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
    net.train()
    net(torch.randn(32, 4) * 5 + 2)
    assert net[1].running_mean.abs().sum() > 0
    fresh = runs.untrained(runs.from_model(net, ["2"]), 0).model
    assert torch.equal(fresh[1].running_mean, torch.zeros(3))
    assert torch.equal(fresh[1].running_var, torch.ones(3))
    assert fresh[1].num_batches_tracked.item() == 0


class _Scaled(nn.Module):
    """A custom module whose own parameter no reset_parameters() resets."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.linear(x) * self.scale


def test_untrained_refuses_a_parameter_it_cannot_reset():
    run = runs.from_model(nn.Sequential(_Scaled(), nn.ReLU()), ["1"], name="custom")
    with pytest.raises(ValueError, match=r"custom: no reset_parameters\(\) re-initialises 0\.scale; an untrained baseline"):  # fmt: skip
        runs.untrained(run, 0)


# ----------------------------------------------------------------------- command line


def _checkpoint(path, seed: int) -> None:
    from training.model import MLP

    torch.manual_seed(seed)
    model = MLP(depth=3, width=8)
    checkpoints.save(
        path,
        {"model": {"factory": "training.model:MLP", "kwargs": {"depth": 3, "width": 8}},
         "layers": model.layer_names, "dataset": "mnist-5k",
         "layer_weights": {n: f"{n}.linear.weight" for n in model.layer_names},
         "method": {"name": path.parent.name, "sg_layers": []}},
        model.state_dict(), history=[{"epoch": 1, "train_accuracy": 0.5, "test_accuracy": 0.4}],
    )  # fmt: skip


@pytest.fixture
def ckpt(tmp_path):
    for k, name in enumerate(["bp/seed-0", "bp/seed-1", "dfa/seed-0"]):
        _checkpoint(tmp_path / name, k)
    return tmp_path


@pytest.mark.filterwarnings("ignore:.*constant over units:UserWarning")  # dead ReLUs of tiny MLPs
def test_the_command_stores_each_measure_and_draws_its_figure(ckpt, capsys):
    argv = [str(ckpt), "--measure", "cka,rsa:spearman", "--bootstrap", "5", "--permutations",
            "5", "--device", "cpu", "--quiet", "--stimuli", STIMULI]  # fmt: skip
    assert compare.main(argv) == 0
    results = store.open_results(ckpt / "results.zarr")
    for slug in ("cka_linear", "rsa_spearman"):
        for name in (f"similarity_{slug}", f"similarity_{slug}_ci", f"similarity_{slug}_p"):
            assert name in results.data_vars, name
        png = (ckpt / "figures" / f"compare_{slug}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    sim = results["similarity_cka_linear"]
    assert list(sim["run"].values) == ["bp/seed-0", "bp/seed-1", "dfa/seed-0"]
    np.testing.assert_allclose(np.diag(sim.sel(run="dfa/seed-0", run_="dfa/seed-0")), 1, atol=1e-6)
    assert "best-matching layer of bp/seed-0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--measure", "cka:bogus"], r"error: unknown measure 'cka:bogus': expected one of rsa:corr"),
        (["--measure", " , "], r"error: --measure names no measure"),
        (["--bootstrap", "-1"], r"error: --bootstrap must be 0 \(none\) or a positive number, got -1"),
        (["--permutations", "-2"], r"error: --permutations must be 0 \(none\) or a positive number"),
    ],
)  # fmt: skip
def test_bad_options_end_the_command_with_one_line(ckpt, capsys, extra, message):
    assert compare.main([str(ckpt), "--quiet", "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.match(message, err), err
    assert not (ckpt / "results.zarr").exists()


def test_the_reference_run_is_bp_else_the_first_or_the_one_named():
    assert _reference(["dfa/seed-0", "bp/seed-0", "bp/seed-1"], None) == "bp"
    assert _reference(["dfa", "sg"], None) == "dfa"
    assert _reference(["dfa", "sg/seed-1"], "sg") == "sg"
    assert _reference(["dfa", "sg/seed-1"], "sg/seed-1") == "sg/seed-1"
    with pytest.raises(ValueError, match=r"--reference 'fa' is not a run \(dfa, sg/seed-1\)"):
        _reference(["dfa", "sg/seed-1"], "fa")


class External(torch.nn.Module):
    """A network trained elsewhere, known only from a weights file and --model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 12)
        self.fc2 = torch.nn.Linear(12, 6)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_the_command_on_an_external_safetensors_file(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = External()
    save_file(net.state_dict(), tmp_path / "ext.safetensors")
    argv = [str(tmp_path / "ext.safetensors"), "--model", "tests.compare.test_analysis:External",
            "--layers", "fc1,fc2", "--stimuli", "mnist-5k:test:30", "--measure",
            "cka:linear-biased", "--no-baseline", "--device", "cpu", "--quiet"]  # fmt: skip
    assert compare.main(argv) == 0
    assert "cka:linear-biased" in capsys.readouterr().out
    sim = store.open_results(tmp_path / "results.zarr")["similarity_cka_linear_biased"]
    assert sim.dims == ("run", "layer", "run_", "layer_")
    with torch.no_grad():  # Kornblith et al.'s feature-space form on a manual forward pass
        h1 = net.fc1(datasets.select("mnist-5k:test:30").inputs).double().numpy()
        h2 = net.fc2(torch.relu(torch.as_tensor(h1, dtype=torch.float32))).double().numpy()
    a, b = h1 - h1.mean(0), h2 - h2.mean(0)
    want = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    got = float(sim.sel(run="ext", layer="fc1", run_="ext", layer_="fc2"))
    assert got == pytest.approx(want, abs=1e-5)
    assert (tmp_path / "figures" / "compare_cka_linear_biased.png").read_bytes()[:4] == b"\x89PNG"
