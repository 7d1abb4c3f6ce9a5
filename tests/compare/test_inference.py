"""Bootstrap, permutation null, best-matching layer and seed summaries, each against the
measure recomputed by hand on the same draws, and every error."""

import numpy as np
import pytest
import xarray as xr
from rsatoolbox.rdm import RDMs
from rsatoolbox.rdm import compare as rsatoolbox_compare
from scipy.stats import ortho_group

from repsim import compare
from repsim.rdm import diag_l2, rdm

N = 40
LABELS = np.repeat(np.arange(4), N // 4)


def _acts(seed: int = 0, runs=("bp/seed-0", "dfa/seed-0"), layers=3, d=6, noise=0.5):
    """Real-ish activations ``(run, layer, stimulus, unit)``: four classes, layers that
    share a class structure, with ``label`` and ``index`` coordinates."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 5)) * 2
    z = centres[LABELS] + rng.normal(size=(N, 5))
    values = np.stack(
        [
            np.stack(
                [
                    z @ rng.normal(size=(5, d)) + noise * rng.normal(size=(N, d))
                    for _ in range(layers)
                ]
            )
            for _ in runs
        ]
    )
    return xr.DataArray(
        values.astype(np.float32),
        dims=("run", "layer", "stimulus", "unit"),
        coords={
            "run": list(runs),
            "layer": [f"l{i}" for i in range(layers)],
            "label": ("stimulus", LABELS),
            "index": ("stimulus", np.arange(N) * 7),
        },
    )


def _independent(k: int, seed: int, n: int = 30, d: int = 5) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.normal(size=(k, n, d)).astype(np.float32), dims=("layer", "stimulus", "unit")
    )


# ----------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("measure", ["cka", "cka:linear-biased", "shape:procrustes", "shape:0.5"])
def test_each_bootstrap_sample_is_the_measure_on_stimuli_drawn_with_replacement(measure):
    acts = _acts(seed=1)
    got = compare.bootstrap(acts, measure=measure, n=4, seed=7, device="cpu")
    slug = compare.measure(measure).slug
    assert got.dims == ("resample", "run", "layer", "run_", "layer_")
    assert got.shape == (4, 2, 3, 2, 3) and got.dtype == np.float32
    assert got.name == f"similarity_{slug}_resample"
    assert got.attrs["seed"] == 7 and got.attrs["resampling"] == "bootstrap over stimuli"
    assert list(got["run_"].values) == ["bp/seed-0", "dfa/seed-0"]
    rng = np.random.default_rng(7)
    for k in range(4):
        idx = rng.integers(0, N, N)  # the draws bootstrap_diag_l2 makes with this seed too
        if measure.startswith("shape"):  # copies are kept: the measure on the drawn stimuli
            want = compare.compare(acts.isel(stimulus=idx), measure=measure, device="cpu").values
        else:  # CKA: the centred Grams of the drawn stimuli, a stimulus and its copy left out
            want = _cka_without_copies(acts, idx, unbiased=measure == "cka")
        np.testing.assert_allclose(got.values[k], want, atol=1e-5, rtol=0)


def _centred(x: np.ndarray, unbiased: bool) -> np.ndarray:
    """Kornblith et al.'s centre_gram in float64 (``unbiased``: U-centring)."""
    k = x @ x.T
    n = len(k)
    if not unbiased:
        h = np.eye(n) - 1.0 / n
        return h @ k @ h
    np.fill_diagonal(k, 0)
    means = k.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    k = k - means[:, None] - means[None, :]
    np.fill_diagonal(k, 0)
    return k


def _cka_without_copies(acts: xr.DataArray, idx: np.ndarray, unbiased: bool) -> np.ndarray:
    copies = (idx[:, None] == idx[None, :]) & ~np.eye(len(idx), dtype=bool)
    values = acts.transpose("run", "layer", "stimulus", "unit").values.astype(np.float64)
    grams = [
        np.where(copies, 0.0, _centred(values[r, j][idx], unbiased)).ravel()
        for r in range(values.shape[0])
        for j in range(values.shape[1])
    ]
    g = np.stack(grams)
    inner = g @ g.T
    norms = np.sqrt(np.diag(inner))
    return (inner / np.outer(norms, norms)).reshape(values.shape[:2] * 2)


@pytest.mark.parametrize("method", ["spearman", "corr"])
def test_rsa_bootstrap_leaves_out_the_pairs_of_a_stimulus_with_its_copy(method):
    acts = _acts(seed=2, runs=("a",), layers=2)
    got = compare.bootstrap(acts, measure=f"rsa:{method}", n=3, seed=3, device="cpu")
    rdms = rdm(acts, device="cpu").isel(run=0).values.astype(np.float64)  # (layer, n, n)
    rng = np.random.default_rng(3)
    for k in range(3):
        idx = rng.integers(0, N, N)
        keep = np.triu(np.ones((N, N), bool), 1) & (idx[:, None] != idx[None, :])
        vectors = rdms[:, idx][:, :, idx][:, keep]
        want = rsatoolbox_compare(RDMs(vectors), RDMs(vectors), method=method)
        np.testing.assert_allclose(got.values[k, 0, :, 0, :], want, atol=1e-5, rtol=0)


def test_the_same_seed_draws_the_same_samples():
    acts = _acts(seed=3)
    first = compare.bootstrap(acts, n=5, seed=11, device="cpu")
    xr.testing.assert_identical(first, compare.bootstrap(acts, n=5, seed=11, device="cpu"))
    other = compare.bootstrap(acts, n=5, seed=12, device="cpu")
    assert not np.allclose(first.values, other.values)


@pytest.mark.parametrize("measure", ["cka", "rsa:spearman"])
def test_the_interval_is_the_percentiles_and_holds_the_point_estimate(measure):
    acts = _acts(seed=4)
    samples = compare.bootstrap(acts, measure=measure, n=40, seed=0, device="cpu")
    ci = compare.interval(samples, 0.9)
    assert ci.dims == ("quantile", "run", "layer", "run_", "layer_")
    np.testing.assert_allclose(ci["quantile"].values, [0.05, 0.95])
    want = np.quantile(samples.values, [0.05, 0.95], axis=0)
    np.testing.assert_allclose(ci.values, want, rtol=1e-6)
    assert ci.attrs["ci"] == 0.9 and ci.attrs["measure"] == samples.attrs["measure"]
    point = compare.compare(acts, measure=measure, device="cpu")
    low, high = ci.isel(quantile=0), ci.isel(quantile=1)
    inside = (low <= point + 1e-6) & (point - 1e-6 <= high)
    assert float(inside.mean()) >= 0.8  # measured: every one of the 36 (CKA and RSA)


@pytest.mark.parametrize("ci", [0.0, 1.0, 95, -0.5])
def test_the_interval_needs_a_coverage_between_0_and_1(ci):
    samples = compare.bootstrap(_independent(2, 0), n=2, device="cpu")
    with pytest.raises(ValueError, match=r"ci must be between 0 and 1 \(e\.g\. 0\.95\)"):
        compare.interval(samples, ci)


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_resample_counts_must_be_positive_whole_numbers(n):
    acts = _independent(2, 0)
    message = rf"n must be a positive whole number, got {n!r}"
    with pytest.raises(ValueError, match=message):
        compare.bootstrap(acts, n=n, device="cpu")
    with pytest.raises(ValueError, match=message):
        compare.permutation_test(acts, n=n, device="cpu")
    with pytest.raises(ValueError, match=message):
        compare.bootstrap_diag_l2(rdm(_acts(), device="cpu"), n=n)


# ----------------------------------------------------------------------- diagonal L2


def test_bootstrap_diag_l2_is_diag_l2_of_the_resampled_rdms():
    acts = _acts(seed=5, layers=4)
    rdms = rdm(acts, device="cpu")
    got = compare.bootstrap_diag_l2(rdms, n=6, seed=9)
    assert got.dims == ("resample", "run", "layer") and got.name == "diag_l2_resample"
    assert got.attrs == {"resampling": "bootstrap over stimuli", "seed": 9}
    assert list(got["layer"].values) == ["l0", "l1", "l2", "l3"]
    rng = np.random.default_rng(9)
    for k in range(6):
        idx = rng.integers(0, N, N)
        # a stimulus paired with its own copy adds (0 − 0)² in every layer
        want = diag_l2(rdms.isel(stimulus=idx, stimulus_=idx)).transpose("run", "layer")
        np.testing.assert_allclose(got.values[k], want.values, rtol=1e-5, atol=1e-6)
        assert (got.values[k, :, -1] == 0).all()  # the last layer is the reference
    assert got.values[:, :, :-1].std(axis=0).min() > 0  # the draws differ


def test_bootstrap_diag_l2_measures_to_each_runs_last_layer_present():
    acts = _acts(seed=6, layers=3)
    rdms = rdm(acts, device="cpu")
    rdms.loc[{"run": "dfa/seed-0", "layer": "l2"}] = np.nan  # dfa lacks its last layer
    got = compare.bootstrap_diag_l2(rdms, n=3, seed=0)
    rng = np.random.default_rng(0)
    for k in range(3):
        idx = rng.integers(0, N, N)
        want = diag_l2(rdms.isel(stimulus=idx, stimulus_=idx)).transpose("run", "layer")
        np.testing.assert_allclose(got.values[k], want.values, rtol=1e-5, atol=1e-6)
    assert np.isnan(got.sel(run="dfa/seed-0", layer="l2")).all()
    assert (got.sel(run="dfa/seed-0", layer="l1") == 0).all()


def test_bootstrap_diag_l2_needs_layered_rdms_with_labels():
    rdms = rdm(_acts(), device="cpu")
    with pytest.raises(ValueError, match=r"needs RDMs \(\.\.\., layer, stimulus, stimulus_\) with labels"):  # fmt: skip
        compare.bootstrap_diag_l2(rdms.drop_vars(["label", "label_"]), n=2)
    with pytest.raises(ValueError, match=r"needs RDMs"):
        compare.bootstrap_diag_l2(rdms.isel(layer=0), n=2)


# ----------------------------------------------------------------------- permutations


@pytest.mark.parametrize("measure", ["cka", "shape:procrustes", "rsa:spearman"])
def test_a_layer_against_itself_beats_every_permutation(measure):
    acts = _independent(3, seed=1)
    got = compare.permutation_test(acts, measure=measure, n=19, seed=0, device="cpu")
    assert got.dims == ("layer", "layer_")
    assert got.name == f"similarity_{compare.measure(measure).slug}_p"
    assert got.attrs["permutations"] == 19 and got.attrs["seed"] == 0
    np.testing.assert_allclose(np.diag(got.values), 1 / 20)


@pytest.mark.parametrize("measure", ["cka:linear-biased", "shape:procrustes"])
def test_the_p_value_counts_the_permutations_at_least_as_good(measure):
    a, b = _independent(2, seed=2), _independent(2, seed=3)
    b = b + 0.8 * a.values  # related layers, so p varies between pairs
    got = compare.permutation_test(a, b, measure=measure, n=15, seed=4, device="cpu")
    observed = compare.compare(a, b, measure=measure, device="cpu").values
    rng = np.random.default_rng(4)
    hits = np.zeros_like(observed)
    for _ in range(15):
        null = compare.compare(
            a, b.isel(stimulus=rng.permutation(30)), measure=measure, device="cpu"
        )
        hits += (
            (null.values <= observed) if measure.startswith("shape") else null.values >= observed
        )
    np.testing.assert_allclose(got.values, (1 + hits) / 16)


def test_p_values_of_independent_layers_spread_over_0_to_1():
    a, b = _independent(8, seed=5), _independent(8, seed=6)
    p = compare.permutation_test(a, b, measure="cka", n=19, seed=0, device="cpu").values
    # measured: mean 0.52, 3 of the 64 at p ≤ 0.05, half above 0.5
    assert set(np.round(p.ravel() * 20).astype(int)) <= set(range(1, 21))
    assert 0.3 < p.mean() < 0.7 and (p <= 0.05).mean() < 0.2 and (p > 0.5).mean() > 0.25


def test_an_undefined_score_has_no_p_value():
    acts = _independent(2, seed=7)
    acts[1] = 0.0
    with pytest.warns(UserWarning, match=r"layer 1"):  # compare() warns; the test does not
        compare.compare(acts, measure="cka", device="cpu")
    p = compare.permutation_test(acts, measure="cka", n=5, device="cpu").values
    assert np.isnan(p[1]).all() and np.isnan(p[:, 1]).all() and p[0, 0] == pytest.approx(1 / 6)


# ----------------------------------------------------------------------- best match


def _rotated_copies(seed: int):
    """Run ``a`` with four unrelated layers; run ``b`` whose layer j is a rotated, scaled
    copy of ``a``'s layer ``order[j]``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(4, N, 6))
    order = rng.permutation(4)
    b = np.stack(
        [(j + 1) * a[i] @ ortho_group.rvs(6, random_state=seed + j) for j, i in enumerate(order)]
    )
    acts = xr.DataArray(
        np.stack([a, b]).astype(np.float32),
        dims=("run", "layer", "stimulus", "unit"),
        coords={
            "run": ["a", "b"],
            "layer": ["x0", "x1", "x2", "x3"],
            "label": ("stimulus", LABELS),
        },
    )
    return acts, order


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("measure", ["cka", "rsa:corr", "shape:procrustes"])
def test_best_match_finds_the_rotated_copy_of_each_layer(measure, seed):
    acts, order = _rotated_copies(seed)
    if measure == "rsa:corr":  # the correlation RDM survives unit permutation, not rotation
        a = acts.values[0]
        acts = acts.copy(data=np.stack([a, a[order][..., ::-1] * np.arange(1, 5)[:, None, None]]))
    m = compare.measure(measure)
    got = compare.best_match(acts, measure=measure, seed=seed, device="cpu")
    best, score = got[f"best_layer_{m.slug}"], got[f"best_score_{m.slug}"]
    assert best.dims == score.dims == ("run", "layer", "run_")
    assert best.attrs["measure"] == m.name and best.attrs["seed"] == seed
    names = np.array(["x0", "x1", "x2", "x3"])
    expected = names[np.argsort(order)]  # a's layer i is b's layer j where order[j] = i
    assert list(best.sel(run="a", run_="b").values) == list(expected)
    assert list(best.sel(run="b", run_="a").values) == list(names[order])
    assert list(best.sel(run="a", run_="a").values) == list(names)
    perfect = 0.0 if m.distance else 1.0
    np.testing.assert_allclose(score.sel(run="a", run_="b").values, perfect, atol=1e-5)


def test_best_match_errors():
    acts, _ = _rotated_copies(0)
    with pytest.raises(ValueError, match=r"needs the second side as an activations tree of runs"):
        compare.best_match(acts, acts.isel(run=0), device="cpu")
    few = acts.isel(stimulus=slice(0, 7)).assign_coords(label=("stimulus", np.zeros(7, int)))
    with pytest.raises(ValueError, match=r"7 stimuli are too few \(use at least 8\)"):
        compare.best_match(few, device="cpu")


# ----------------------------------------------------------------------- seeds


@pytest.mark.parametrize(
    ("run", "rule"),
    [("bp/seed-2", "bp"), ("sg/full/seed-10", "sg/full"), ("bp", "bp"), ("bp/seed-x", "bp/seed-x"),
     ("seed-3", "seed-3"), ("dfa/seed-0/", "dfa/seed-0/")],
)  # fmt: skip
def test_rule_of(run, rule):
    assert compare.rule_of(run) == rule


def test_seed_summary_by_hand():
    runs = ["bp/seed-0", "bp/seed-1", "dfa/seed-0"]
    values = np.random.default_rng(0).uniform(size=(3, 2, 3, 2))
    sim = xr.DataArray(
        values,
        dims=("run", "layer", "run_", "layer_"),
        coords={"run": runs, "layer": ["h1", "h2"], "run_": runs, "layer_": ["h1", "h2"]},
        attrs={"measure": "cka:linear"},
    )
    got = compare.seed_summary(sim.transpose("run_", "layer", "layer_", "run"))
    assert got["mean"].dims == ("rule", "layer", "rule_", "layer_")
    assert list(got["rule"].values) == ["bp", "dfa"] and got.attrs["measure"] == "cka:linear"
    np.testing.assert_array_equal(got["pairs"].values, [[2, 2], [2, 0]])
    bp_bp = np.stack([values[0, :, 1], values[1, :, 0]])  # never a run with itself
    bp_dfa = np.stack([values[0, :, 2], values[1, :, 2]])
    for stat, f in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        v = got[stat]
        np.testing.assert_allclose(v.sel(rule="bp", rule_="bp").values, f(bp_bp, 0))
        np.testing.assert_allclose(v.sel(rule="bp", rule_="dfa").values, f(bp_dfa, 0))
        np.testing.assert_allclose(
            v.sel(rule="dfa", rule_="bp").values, f(np.stack([values[2, :, 0], values[2, :, 1]]), 0)
        )
        assert np.isnan(v.sel(rule="dfa", rule_="dfa")).all()  # one dfa run: no pair


@pytest.mark.parametrize("measure", ["cka", "cka:linear-biased"])
def test_the_cka_bootstrap_is_centred_on_the_estimate(measure):
    """A stimulus drawn twice would pair with its copy like the diagonal does; left in, it
    lifts the bootstrap distribution far above the estimate (0.13 above it for independent
    layers); left out, the median sits on the estimate."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(200, 64)) @ rng.normal(size=(64, 48)), 0)
    y = np.maximum(rng.normal(size=(200, 64)) @ rng.normal(size=(64, 40)), 0)
    a = xr.DataArray(x, dims=("stimulus", "unit"))
    b = xr.DataArray(y, dims=("stimulus", "unit"))
    estimate = float(compare.compare(a, b, measure=measure, device="cpu"))
    samples = compare.bootstrap(a, b, measure=measure, n=100, seed=0, device="cpu")
    assert abs(float(samples.median()) - estimate) < 0.02
    low, high = compare.interval(samples).values
    assert low <= estimate <= high
