"""The comparison measures against independent float64 references (rsatoolbox, Kornblith
et al.'s CKA, Song et al.'s unbiased HSIC written out, scipy's Procrustes, canonical
correlations), their properties over several seeds (1 on itself, symmetric, invariant,
a metric), the degenerate inputs and every error."""

import itertools
import warnings

import numpy as np
import pytest
import rsatoolbox
import torch
import xarray as xr
from rsatoolbox.rdm import RDMs
from scipy.linalg import null_space, orthogonal_procrustes
from scipy.stats import ortho_group

from repsim import compare
from repsim.compare import _kernels
from repsim.rdm import rdm

# ----------------------------------------------------------------------- data


def _f32(x: np.ndarray) -> np.ndarray:
    """What the measures see: activations are stored as float32."""
    return np.asarray(x, np.float32).astype(np.float64)


def _related(n: int, widths: tuple[int, ...], seed: int, noise: float = 0.5) -> list[np.ndarray]:
    """Layers over ``n`` stimuli that share a 4-d latent (so scores are neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    return [
        _f32(z @ rng.normal(size=(4, d)) + noise * rng.normal(size=(n, d)) + rng.normal(size=d))
        for d in widths
    ]


def _layers(*mats: np.ndarray, names=None) -> xr.DataArray:
    """Same-width layers stacked as ``(layer, stimulus, unit)``."""
    names = names or [f"l{i}" for i in range(len(mats))]
    return xr.DataArray(
        np.stack(mats).astype(np.float32),
        dims=("layer", "stimulus", "unit"),
        coords={"layer": names},
    )


def _tree(runs: dict[str, dict[str, np.ndarray]]) -> xr.DataTree:
    """An activations tree as repsim.store lays it out: ``tree[run][layer]["activations"]``."""
    nodes = {}
    for run, layers in runs.items():
        nodes[f"/{run}"] = xr.Dataset(attrs={"run": run, "layers": list(layers)})
        for layer, x in layers.items():
            acts = xr.DataArray(np.asarray(x, np.float32), dims=("stimulus", "unit"))
            nodes[f"/{run}/{layer}"] = xr.Dataset({"activations": acts})
    return xr.DataTree.from_dict(nodes)


def _score(a: np.ndarray, b: np.ndarray, measure: str) -> float:
    """One layer against one layer."""
    return compare.compare(_layers(a), _layers(b), measure=measure, device="cpu").item()


# ----------------------------------------------------------------------- references


def _centre(k: np.ndarray) -> np.ndarray:
    h = np.eye(len(k)) - 1 / len(k)
    return h @ k @ h


def _hsic_biased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """tr(K H L H) / (n − 1)²."""
    return float(np.trace(k @ _centre(l))) / (len(k) - 1) ** 2


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), eq. 5, from uncentred Grams."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return float(
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ kt @ lt @ one
    ) / (n * (n - 3))


def _hsic_u_loop(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """The U-statistic itself: the mean over distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr − 2 k_ij l_iq."""
    t = np.array(list(itertools.permutations(range(len(k)), 4)))
    i, j, q, r = t.T
    return float(np.mean(k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]))


def _cka(hsic, k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. 5: ‖Y_cᵀX_c‖²_F / (‖X_cᵀX_c‖_F ‖Y_cᵀY_c‖_F)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    fro = np.linalg.norm
    return fro(yc.T @ xc) ** 2 / (fro(xc.T @ xc) * fro(yc.T @ yc))


def _gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Kornblith et al.'s ``gram_rbf`` (google-research/representation_similarity)."""
    dot = x @ x.T
    sq = np.diag(dot)
    d2 = -2 * dot + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def _unit_fro(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    return xc / np.linalg.norm(xc)


# ----------------------------------------------------------------------- RSA


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ties", ["none", "one side", "both"])
@pytest.mark.parametrize("method", compare.RSA_METHODS)
def test_rsa_kernel_matches_rsatoolbox(method, ties, seed):
    rng = np.random.default_rng(seed)
    p = 45  # the upper triangle of a 10-stimulus RDM
    v, w = rng.normal(size=(3, p)), rng.normal(size=(4, p))
    if ties in ("one side", "both"):
        v = rng.integers(0, 5, (3, p)).astype(np.float64)
    if ties == "both":
        w = rng.integers(0, 4, (4, p)).astype(np.float64)
    got = _kernels.rsa(torch.from_numpy(v), torch.from_numpy(w), method).numpy()
    want = rsatoolbox.rdm.compare(RDMs(v), RDMs(w), method=method)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["spearman", "tau-a", "rho-a"])
def test_rank_rsa_is_invariant_to_a_monotone_change_of_the_dissimilarities(method):
    rng = np.random.default_rng(0)
    v, w = rng.uniform(0.1, 2, (2, 45)), rng.uniform(0.1, 2, (3, 45))
    before = _kernels.rsa(torch.from_numpy(v), torch.from_numpy(w), method)
    after = _kernels.rsa(torch.from_numpy(np.exp(3 * v)), torch.from_numpy(np.sqrt(w)), method)
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-12)
    changed = _kernels.rsa(torch.from_numpy(np.exp(3 * v)), torch.from_numpy(w), "corr")
    assert not np.allclose(changed.numpy(), _kernels.rsa(*map(torch.from_numpy, (v, w)), "corr"))


@pytest.mark.parametrize("method", compare.RSA_METHODS)
def test_rsa_of_activations_matches_rsatoolbox_on_the_rdms_upper_triangles(method):
    n = 20
    x = _related(n, (7, 7, 7, 11, 11), seed=3)
    a, b = _layers(*x[:3]), _layers(*x[3:])
    iu = np.triu_indices(n, 1)
    va = rdm(a, device="cpu").values[:, iu[0], iu[1]].astype(np.float64)
    vb = rdm(b, device="cpu").values[:, iu[0], iu[1]].astype(np.float64)
    want = rsatoolbox.rdm.compare(RDMs(dissimilarities=va), RDMs(dissimilarities=vb), method)
    got = compare.rsa(a, b, method=method, device="cpu")
    assert got.dims == ("layer", "layer_") and got.dtype == np.float64
    assert got.name == f"similarity_rsa_{method.replace('-', '_')}"
    assert got.attrs == {"measure": f"rsa:{method}", "kind": "similarity"}
    assert list(got["layer_"].values) == ["l0", "l1"]
    np.testing.assert_allclose(got.values, want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------- CKA


@pytest.mark.parametrize(("n", "seed"), [(10, 0), (13, 1), (40, 2)])
def test_biased_linear_cka_matches_the_feature_space_and_gram_forms(n, seed):
    x, y = _related(n, (6, 9), seed)
    feature = _cka_features(x, y)
    gram = _cka(_hsic_biased, x @ x.T, y @ y.T)  # uncentred Grams, centred by H
    assert feature == pytest.approx(gram, rel=1e-10)  # the references agree
    assert 0.05 < feature < 0.999
    got = compare.cka(_layers(x), _layers(y), unbiased=False, device="cpu")
    assert got.dims == ("layer", "layer_") and got.name == "similarity_cka_linear_biased"
    assert got.item() == pytest.approx(feature, abs=1e-6)
    assert _score(x, y, "cka:linear-biased") == pytest.approx(feature, abs=1e-6)
    one = _kernels.linear_cka_features(torch.from_numpy(x), torch.from_numpy(y))
    assert one.item() == pytest.approx(feature, abs=1e-12)


@pytest.mark.parametrize("n", [5, 6, 8])
def test_song_et_al_formula_is_the_u_statistic(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 3)) + 2, rng.normal(size=(n, 4)) - 1
    k, l = x @ x.T, np.tanh(y) @ np.tanh(y).T  # noqa: E741
    assert _hsic_unbiased(k, l) == pytest.approx(_hsic_u_loop(k, l), rel=1e-9, abs=1e-12)
    assert _hsic_unbiased(k, k) == pytest.approx(_hsic_u_loop(k, k), rel=1e-9)


@pytest.mark.parametrize(("n", "seed"), [(7, 5), (8, 6), (10, 0), (11, 1), (12, 2), (14, 3)])
def test_unbiased_linear_cka_matches_song_et_al(n, seed):
    x, y = _related(n, (5, 8), seed)
    k, l = x @ x.T, y @ y.T  # noqa: E741  (uncentred: the U-statistic ignores the mean)
    want = _cka(_hsic_unbiased, k, l)
    if n <= 8:
        assert want == pytest.approx(_cka(_hsic_u_loop, k, l), rel=1e-9)
    got = compare.cka(_layers(x), _layers(y), device="cpu")
    assert got.name == "similarity_cka_linear" and got.attrs["measure"] == "cka:linear"
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert _score(x, y, "cka") == got.item() == _score(x, y, "cka:linear")
    assert abs(want - _cka(_hsic_biased, k, l)) > 1e-3  # the two estimators do differ here


@pytest.mark.parametrize("unbiased", [True, False])
def test_blocked_linear_cka_is_the_same_however_many_rows_a_block_holds(unbiased):
    xs = _related(23, (4, 9, 6), seed=7)
    want = np.array(
        [
            [_cka(_hsic_unbiased if unbiased else _hsic_biased, a @ a.T, b @ b.T) for b in xs]
            for a in xs
        ]
    )
    tensors = [torch.from_numpy(x) for x in xs]
    m, n = len(xs), 23
    for rows in (1, 2, 5, 23):  # the budget that gives `rows` rows per block
        got = _kernels.linear_cka_blocked(tensors, unbiased, 4 * m * n * rows)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0, err_msg=f"{rows} rows")


@pytest.mark.parametrize("sigma", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("n", [15, 21])  # odd: n² distances have one middle value
def test_rbf_cka_matches_kornblith_et_al(n, sigma):
    x, y = _related(n, (6, 3), seed=n)
    k, l = _gram_rbf(x, sigma), _gram_rbf(y, sigma)  # noqa: E741
    biased = compare.cka(_layers(x), _layers(y), kernel="rbf", unbiased=False, sigma=sigma)
    assert biased.item() == pytest.approx(_cka(_hsic_biased, k, l), abs=1e-6)
    unbiased = compare.cka(_layers(x), _layers(y), kernel="rbf", sigma=sigma, device="cpu")
    assert unbiased.item() == pytest.approx(_cka(_hsic_unbiased, k, l), abs=1e-6)
    name = "cka:rbf" if sigma == 1.0 else f"cka:rbf:{sigma:g}"
    assert unbiased.attrs["measure"] == name and _score(x, y, name) == unbiased.item()


@pytest.mark.parametrize("n", [12, 20])
def test_rbf_cka_matches_kornblith_et_al_for_an_even_number_of_stimuli(n):
    x, y = _related(n, (6, 3), seed=n)
    want = _cka(_hsic_biased, _gram_rbf(x), _gram_rbf(y))
    got = compare.cka(_layers(x), _layers(y), kernel="rbf", unbiased=False, device="cpu")
    # measured: off by 2.5e-5 (n = 12) and 2.6e-4 (n = 20)
    assert got.item() == pytest.approx(want, abs=1e-6)


# ----------------------------------------------------------------------- shape


@pytest.mark.parametrize(
    ("n", "widths", "seed"), [(15, (6, 6), 0), (30, (4, 9), 1), (12, (20, 7), 2)]
)
def test_procrustes_shape_distance_matches_scipy(n, widths, seed):
    x, y = _related(n, widths, seed)
    a, b = _unit_fro(x), _unit_fro(y)
    d = max(widths)
    a, b = (np.pad(m, ((0, 0), (0, d - m.shape[1]))) for m in (a, b))  # zero-pad the narrower
    rotation, _ = orthogonal_procrustes(a, b)
    want = np.arccos(np.clip(np.sum((a @ rotation) * b), -1, 1))
    got = compare.shape_distance(_layers(x), _layers(y), alpha=1.0, device="cpu")
    assert got.name == "similarity_shape_procrustes" and got.attrs["kind"] == "distance"
    assert got.item() == pytest.approx(want, abs=1e-7)
    assert 0.05 < want < np.pi / 2


@pytest.mark.parametrize(("widths", "seed"), [((5, 5), 0), ((3, 7), 1)])
def test_cca_shape_distance_is_the_angle_of_the_mean_canonical_correlation(widths, seed):
    x, y = _related(40, widths, seed, noise=1.0)
    qx, _ = np.linalg.qr(x - x.mean(0))
    qy, _ = np.linalg.qr(y - y.mean(0))
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)  # canonical correlations
    want = np.arccos(rho.sum() / np.sqrt(np.prod(widths)))
    got = compare.shape_distance(_layers(x), _layers(y), alpha=0.0, device="cpu")
    assert got.name == "similarity_shape_cca"
    assert got.item() == pytest.approx(want, abs=1e-6)


# ----------------------------------------------------------------------- properties

EVERY_MEASURE = [*compare.MEASURES, "shape:0.5", "cka:rbf:0.5"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("measure", EVERY_MEASURE)
def test_every_measure_is_one_on_itself_symmetric_and_in_range(measure, seed):
    m = compare.measure(measure)
    acts = _layers(*_related(30, (6, 6, 6, 6), seed))
    got = compare.compare(acts, measure=measure, device="cpu")
    assert got.dims == ("layer", "layer_") and got.shape == (4, 4) and got.dtype == np.float64
    assert got.name == f"similarity_{m.slug}"
    assert got.attrs == {"measure": m.name, "kind": "distance" if m.distance else "similarity"}
    values = got.values
    np.testing.assert_allclose(np.diag(values), 0.0 if m.distance else 1.0, atol=1e-6)
    np.testing.assert_allclose(values, values.T, atol=1e-7)
    off = values[~np.eye(4, dtype=bool)]
    if m.distance:
        assert (off > 0.01).all() and (off <= np.pi / 2).all()
    else:
        assert (off < 0.999).all() and (off >= -1).all()
    again = compare.compare(acts, acts, measure=measure, device="cpu")  # two sides given
    np.testing.assert_allclose(again.values, values, atol=1e-7)


def _orthogonal(d: int, seed: int) -> np.ndarray:
    return ortho_group.rvs(d, random_state=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "measure", ["cka", "cka:linear-biased", "cka:rbf", "shape:procrustes", "shape:0.5"]
)
def test_invariance_to_rotation_isotropic_scale_and_shift(measure, seed):
    x, y = _related(25, (6, 8), seed)
    rng = np.random.default_rng(seed)
    # partial whitening mixes the identity with C^(-1/2) (as netrep's), so α = 0.5 is not
    # invariant to scale (seed 0: 0.6147 → 0.6141 for ×3.7); only to rotation and shift
    scale = 1.0 if measure == "shape:0.5" else 3.7
    moved = scale * x @ _orthogonal(6, seed) + rng.normal(size=6)
    before = _score(x, y, measure)
    assert _score(moved, y, measure) == pytest.approx(before, abs=1e-6)
    assert _score(y, moved, measure) == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", compare.RSA_METHODS)
def test_rsa_is_invariant_to_what_keeps_the_correlation_rdm(method, seed):
    """Unit permutation, isotropic scale, one constant added to every activation, and a
    rotation that maps the all-ones direction to itself (the correlation distance centres
    each stimulus over the units, so a general rotation changes the RDM)."""
    x, y = _related(20, (6, 7), seed)
    rng = np.random.default_rng(seed)
    basis = null_space(np.ones((1, 6)))  # the units' directions orthogonal to all-ones
    keeps_ones = basis @ _orthogonal(5, seed) @ basis.T + np.full((6, 6), 1 / 6)
    before = _score(x, y, f"rsa:{method}")
    for moved in (x[:, rng.permutation(6)], 0.3 * x, x + 5.0, x @ keeps_ones):
        assert _score(moved, y, f"rsa:{method}") == pytest.approx(before, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cca_shape_distance_is_invariant_to_an_invertible_linear_map(seed):
    x, y = _related(40, (6, 5), seed)
    rng = np.random.default_rng(seed)
    spread = np.diag(rng.uniform(0.3, 3.0, 6))
    mixed = x @ (_orthogonal(6, seed) @ spread @ _orthogonal(6, seed + 10)) + rng.normal(size=6)
    assert _score(mixed, y, "shape:cca") == pytest.approx(_score(x, y, "shape:cca"), abs=1e-6)
    for partial in ("shape:procrustes", "shape:0.5"):  # only full whitening forgets the map
        assert abs(_score(mixed, y, partial) - _score(x, y, partial)) > 1e-3


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_shape_distance_satisfies_the_triangle_inequality(alpha):
    worst = -np.inf
    for seed in range(8):
        rng = np.random.default_rng(seed)
        xs = _related(30, (5, 5, 5, 5), seed, noise=rng.uniform(0.1, 2.0))
        xs[1] = xs[0] + 0.2 * xs[1]  # a near pair, where the inequality is tightest
        d = compare.shape_distance(_layers(*xs), alpha=alpha, device="cpu").values
        worst = max(worst, max(d[i, k] - d[i, j] - d[j, k] for i, j, k in np.ndindex(4, 4, 4)))
    assert worst <= 1e-9


def test_unbiased_linear_cka_of_independent_layers_is_near_zero_while_biased_is_not():
    # measured over these 20 seeds: unbiased mean 0.0005 (sd 0.041), biased mean 0.94 (min 0.936)
    unbiased, biased = [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        acts = _layers(rng.normal(size=(32, 512)), rng.normal(size=(32, 512)))
        unbiased.append(compare.cka(acts, device="cpu").values[0, 1])
        biased.append(compare.cka(acts, unbiased=False, device="cpu").values[0, 1])
    assert abs(np.mean(unbiased)) < 0.05
    assert min(biased) > 0.5


# ----------------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("measure", [*compare.MEASURES, "shape:0.5"])
def test_an_all_zero_layer_gets_nan_scores_and_a_warning_naming_it(measure):
    xs = _related(30, (8, 8, 8), seed=0)
    xs[1] = np.zeros_like(xs[1])
    acts = _layers(*xs, names=["first", "dead", "last"])
    with pytest.warns(UserWarning, match=r"undefined for layer 'dead'.*constant"):
        got = compare.compare(acts, measure=measure, device="cpu").values
    assert np.isnan(got[1]).all() and np.isnan(got[:, 1]).all()
    assert np.isfinite(got[np.ix_([0, 2], [0, 2])]).all()
    with pytest.warns(UserWarning, match=r"undefined for layer 'dead'"):  # on the second side
        got = compare.compare(_layers(xs[0]), acts, measure=measure, device="cpu").values
    assert np.isnan(got[0, 1]) and np.isfinite(got[0, [0, 2]]).all()


@pytest.mark.parametrize(
    "measure", ["cka", "cka:linear-biased", "cka:rbf", "shape:procrustes", "shape:0.5", "shape:cca"]
)
def test_constant_units_change_nothing(measure):
    x, y = _related(40, (6, 5), seed=4)
    padded = np.hstack([x[:, :3], np.full((40, 2), 2.5), x[:, 3:], np.zeros((40, 1))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _score(padded, y, measure) == pytest.approx(_score(x, y, measure), abs=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_are_an_error_naming_the_layer(bad):
    xs = _related(20, (5, 5), seed=0)
    xs[1][3, 2] = bad
    with pytest.raises(ValueError, match=r"layer 'l1': the activations hold NaN or inf"):
        compare.compare(_layers(*xs), measure="cka", device="cpu")
    with pytest.raises(ValueError, match=r"NaN"):
        compare.rsa(_layers(xs[0]), _layers(*xs), device="cpu")


def test_cca_needs_more_stimuli_than_units():
    x, y = _related(10, (10, 4), seed=0)
    with pytest.raises(ValueError, match=r"more stimuli than .*got 10 stimuli and 10 units"):
        compare.shape_distance(_layers(x), _layers(y), alpha=0.0, device="cpu")
    with pytest.raises(ValueError, match=r"layer 'l0'.*more stimuli"):  # on the second side too
        compare.compare(_layers(y), _layers(x), measure="shape:0.5", device="cpu")
    dead = np.hstack([x[:, :6], np.zeros((10, 4))])  # 6 live units: enough
    assert np.isfinite(_score(dead, y, "shape:cca"))
    assert np.isfinite(_score(x, y, "shape:procrustes"))  # Procrustes does not whiten


def test_the_two_sides_must_share_their_stimuli():
    x, y = _related(20, (4, 4), seed=0)
    with pytest.raises(ValueError, match=r"other stimuli \(20 and 15 stimuli"):
        compare.compare(_layers(x), _layers(y[:15]), device="cpu")
    a = _layers(x).assign_coords(index=("stimulus", np.arange(20)))
    b = _layers(y).assign_coords(index=("stimulus", np.arange(20)[::-1]))
    with pytest.raises(ValueError, match=r"extracted on other stimuli .*same stimuli"):
        compare.compare(a, b, measure="rsa", device="cpu")
    same = b.assign_coords(index=("stimulus", np.arange(20)))
    assert compare.compare(a, same, device="cpu").shape == (1, 1)


def test_runs_of_a_tree_must_share_their_stimuli():
    x, y = _related(20, (4, 6), seed=0)
    with pytest.raises(ValueError, match=r"run 'r2', layer 'h' was extracted on other stimuli"):
        compare.compare(_tree({"r1": {"h": x}, "r2": {"h": y[:12]}}), device="cpu")


def test_what_is_not_activations_is_an_error():
    x = _related(20, (4,), seed=0)[0]
    with pytest.raises(ValueError, match=r"expected an activations tree .* got ndarray"):
        compare.compare(x, device="cpu")
    with pytest.raises(ValueError, match=r"b: expected .*DataArray with dims.*got DataArray"):
        compare.compare(_layers(x), _layers(x).rename(unit="neuron"), device="cpu")
    with pytest.raises(ValueError, match=r"the a tree holds no layers"):
        compare.compare(xr.DataTree(), device="cpu")


def test_a_single_layer_dataarray_is_compared():
    x, y = _related(20, (4, 5), seed=0)
    got = compare.compare(
        xr.DataArray(x, dims=("stimulus", "unit")), xr.DataArray(y, dims=("stimulus", "unit"))
    )
    assert got.dims == () and got.item() == pytest.approx(_score(x, y, "cka"))


def test_a_tree_compares_layers_of_every_width_and_leaves_missing_layers_nan():
    x, y, z = _related(25, (4, 9, 3), seed=2)
    tree = _tree({"r1": {"a": x, "b": y}, "r2": {"a": z}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing layer is not a degenerate one
        got = compare.compare(tree, measure="cka:linear-biased", device="cpu")
    assert got.dims == ("run", "layer", "run_", "layer_") and got.shape == (2, 2, 2, 2)
    assert got.sel(run="r1", layer="b", run_="r2", layer_="a").item() == pytest.approx(
        _cka_features(y, z), abs=1e-6
    )
    assert (
        np.isnan(got.sel(run="r2", layer="b")).all()
        and np.isnan(got.sel(run_="r2", layer_="b")).all()
    )


# ----------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("spec", "name", "slug", "param", "unbiased"),
    [
        ("cka", "cka:linear", "cka_linear", None, True),
        ("cka:linear-biased", "cka:linear-biased", "cka_linear_biased", None, False),
        ("cka:rbf", "cka:rbf", "cka_rbf", 1.0, True),
        ("cka:rbf-biased:0.5", "cka:rbf-biased:0.5", "cka_rbf_biased_0p5", 0.5, False),
        ("rsa", "rsa:spearman", "rsa_spearman", None, True),
        ("rsa:tau-a", "rsa:tau-a", "rsa_tau_a", None, True),
        ("shape", "shape:procrustes", "shape_procrustes", 1.0, True),
        ("shape:1", "shape:procrustes", "shape_procrustes", 1.0, True),
        ("shape:0", "shape:cca", "shape_cca", 0.0, True),
        (" shape:0.25 ", "shape:0.25", "shape_0p25", 0.25, True),
    ],
)
def test_measure_strings_parse_and_name_themselves(spec, name, slug, param, unbiased):
    m = compare.measure(spec)
    assert (m.name, m.slug, m.param, m.unbiased) == (name, slug, param, unbiased)
    assert compare.measure(m.name) == m and compare.measure(m) is m
    assert m.distance == (m.family == "shape")


def test_every_listed_measure_parses_to_itself():
    assert [compare.measure(s).name for s in compare.MEASURES] == list(compare.MEASURES)


@pytest.mark.parametrize(
    "spec",
    ["", "foo", "cka:cosine", "cka:linear:2", "cka:rbf:0", "cka:rbf:-1", "cka:rbf:wide",
     "rsa:pearson", "rsa:tau-b", "shape:1.5", "shape:-0.5", "shape:nan", "shape:wide"],
)  # fmt: skip
def test_unknown_measures_are_an_error_listing_the_valid_ones(spec):
    listed = r"expected one of rsa:corr, rsa:spearman, .*cka:linear, .*shape:cca"
    with pytest.raises(ValueError, match=rf"unknown measure '{spec}': {listed}"):
        compare.measure(spec)
    x = _related(12, (3,), seed=0)[0]
    with pytest.raises(ValueError, match=r"unknown measure"):
        compare.compare(_layers(x), measure=spec, device="cpu")


def test_the_named_wrappers_check_their_options():
    acts = _layers(_related(12, (3,), seed=0)[0])
    with pytest.raises(ValueError, match=r"unknown RSA method 'pearson': expected one of corr, spearman, tau-a"):  # fmt: skip
        compare.rsa(acts, method="pearson")
    with pytest.raises(ValueError, match=r"unknown CKA kernel 'poly': expected 'linear' or 'rbf'"):
        compare.cka(acts, kernel="poly")
    for sigma in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match=r"sigma must be a positive multiple"):
            compare.cka(acts, kernel="rbf", sigma=sigma)
    for alpha in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match=r"alpha must be between 0 \(CCA\) and 1"):
            compare.shape_distance(acts, alpha=alpha)
