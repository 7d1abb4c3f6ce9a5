"""Uncertainty for the comparisons: bootstrap over stimuli, a permutation null, the
cross-validated best-matching layer, and summaries over seeds.

Every resampling draws stimulus indices once and reuses them for every layer and run, so
that the difference between two scores has an interval too (subtract their bootstrap
samples, :func:`interval`). Randomness is the ``seed`` argument.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from repsim.compare.measures import (
    Measure,
    Stack,
    blank,
    measure,
    resample,
    score,
    stack,
    stimulus_matrices,
    to_dataarray,
)
from repsim.devices import resolve_device
from repsim.names import LABEL, LAYER, RUN, STIMULUS, STIMULUS_

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "RESAMPLE",
    "best_match",
    "bootstrap",
    "bootstrap_diag_l2",
    "interval",
    "permutation_test",
    "seed_summary",
]

#: Dimension of bootstrap samples.
RESAMPLE = "resample"


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not show, leave=False)


def _prepare(a: Any, b: Any, measure: str | Measure, device: str | torch.device):
    """The measure, both sides as stacks (``b`` is ``a`` when None), the device, and each
    side's stimulus matrices (the same object for both when ``b`` is None)."""
    m = _measure(measure)
    sa = stack(a, "a")
    sb = sa if b is None else stack(b, "b")
    dev = resolve_device(device)
    mats_a = stimulus_matrices(m, sa, dev)
    mats_b = mats_a if sb is sa else stimulus_matrices(m, sb, dev)
    return m, sa, sb, dev, mats_a, mats_b


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def bootstrap(
    a: Any,
    b: Any = None,
    *,
    measure: str | Measure = "cka",
    n: int = 1000,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> xr.DataArray:
    """Bootstrap samples of :func:`repsim.compare.compare`: stimuli drawn with replacement,
    the same draws for every layer and run.

    Pairs of a stimulus with its own copy are left out — of the RDM comparison (RSA; their
    dissimilarity is 0 in every layer), as rsatoolbox's bootstrap does, and of the centred
    Gram matrices (CKA), as the diagonal is. Kept, they inflate the scores: on two
    independent ReLU layers over 400 stimuli, unbiased linear CKA 0.007, the bootstrap
    median is 0.129 with the copies and 0.008 without (biased: 0.129, 0.223 and 0.131).
    CKA's Gram matrices (and the RBF bandwidth) are those of all stimuli, resampled; shape
    metrics re-whiten each sample (slow: an SVD per pair), copies included.

    Returns
    -------
    xarray.DataArray
        ``(resample, *a's dims, *b's dims_)``, float32; :func:`interval` turns it into
        percentile intervals.
    """
    _check_count("n", n)
    m, sa, sb, dev, mats_a, mats_b = _prepare(a, b, measure, device)
    rng = np.random.default_rng(seed)
    samples = np.empty((n, len(sa.keys), len(sb.keys)), np.float32)
    with _progress(n, f"bootstrap {m.name}", progress) as bar:
        for k in range(n):
            idx = torch.as_tensor(rng.integers(0, sa.n, sa.n), device=dev)
            keep = (idx[:, None] != idx[None, :]) if m.family != "shape" else None
            ra = resample(mats_a, idx)
            rb = ra if mats_b is mats_a else resample(mats_b, idx)
            samples[k] = blank(score(m, ra, rb, keep), sa, sb).cpu().numpy()
            bar.update()
    return _samples(m, sa, sb, samples, RESAMPLE, "bootstrap over stimuli", seed)


def _samples(m: Measure, sa: Stack, sb: Stack, samples: np.ndarray, dim: str, how: str, seed: int):
    out = to_dataarray(m, sa, sb, samples, lead={dim: np.arange(len(samples))})
    out.attrs.update(resampling=how, seed=seed)
    return out.rename(f"{out.name}_{dim}")


def interval(samples: xr.DataArray, ci: float = 0.95, dim: str = RESAMPLE) -> xr.DataArray:
    """Percentile interval of bootstrap ``samples`` over ``dim``: a ``quantile`` dim with
    ``(1 − ci)/2`` and ``(1 + ci)/2``."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.95), got {ci}")
    q = [(1 - ci) / 2, (1 + ci) / 2]
    out = samples.quantile(q, dim=dim, skipna=False)
    out.attrs = {**samples.attrs, "ci": ci}
    return out


def permutation_test(
    a: Any,
    b: Any = None,
    *,
    measure: str | Measure = "cka",
    n: int = 1000,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> xr.DataArray:
    """p-value of each score against the null of no stimulus correspondence: the stimuli
    of ``b`` are shuffled (the same permutation for every layer), the score recomputed,
    and ``p = (1 + #{null at least as good as observed}) / (1 + n)``.

    Returns
    -------
    xarray.DataArray
        ``similarity_<measure>_p`` with the dims of :func:`repsim.compare.compare`.
    """
    _check_count("n", n)
    m, sa, sb, dev, mats_a, mats_b = _prepare(a, b, measure, device)
    observed = blank(score(m, mats_a, mats_b), sa, sb).cpu().numpy()
    null_score = lambda perm: score(m, mats_a, resample(mats_b, perm))  # noqa: E731
    if m.family == "cka":  # centring commutes with permuting: centre once
        from repsim.compare._kernels import center_gram, cka_from_grams

        ka = center_gram(mats_a, m.unbiased)
        kb = ka if mats_b is mats_a else center_gram(mats_b, m.unbiased)
        null_score = lambda perm: cka_from_grams(ka, resample(kb, perm))  # noqa: E731
    rng = np.random.default_rng(seed)
    hits = np.zeros_like(observed)
    with _progress(n, f"permutations {m.name}", progress) as bar:
        for _ in range(n):
            perm = torch.as_tensor(rng.permutation(sa.n), device=dev)
            null = null_score(perm).cpu().numpy()
            hits += (null <= observed) if m.distance else (null >= observed)
            bar.update()
    p = (1 + hits) / (1 + n)
    p[np.isnan(observed)] = np.nan
    out = to_dataarray(m, sa, sb, p)
    out.attrs.update(permutations=n, seed=seed, null="stimuli of the second side shuffled")
    return out.rename(f"{out.name}_p")


def best_match(
    a: Any,
    b: Any = None,
    *,
    measure: str | Measure = "cka",
    seed: int = 0,
    device: str | torch.device = "auto",
) -> xr.Dataset:
    """For each layer of ``a``, the best-matching layer of each run of ``b``, and its score
    cross-validated over stimuli.

    The best layer is chosen on one half of the stimuli (split at random within each
    class) and scored on the other, and the other way round; the two held-out scores are
    averaged. Taking the best of many layers on the same stimuli it is scored on would
    bias the score upward.

    Returns
    -------
    xarray.Dataset
        ``best_layer_<measure>`` (the best layer on all stimuli, by name) and
        ``best_score_<measure>`` (cross-validated), dims ``(run, layer, run_)``.
    """
    import xarray as xr

    m, sa, sb, dev, mats_a, mats_b = _prepare(a, b, measure, device)
    if RUN not in sb.dims or LAYER not in sb.dims:
        raise ValueError("best_match needs the second side as an activations tree of runs")
    halves = _halves(sa, seed)
    full = to_dataarray(m, sa, sb, blank(score(m, mats_a, mats_b), sa, sb).cpu().numpy())
    parts = []
    for h in halves:
        idx = torch.as_tensor(h, device=dev)
        ra = resample(mats_a, idx)
        rb = ra if mats_b is mats_a else resample(mats_b, idx)
        parts.append(to_dataarray(m, sa, sb, blank(score(m, ra, rb), sa, sb).cpu().numpy()))
    layer_ = f"{LAYER}_"
    pick = _argbest(m, full, layer_)
    chosen = [_argbest(m, p, layer_) for p in parts]
    held = [
        parts[1 - k].isel({layer_: chosen[k].fillna(0).astype(int)}).where(chosen[k].notnull())
        for k in range(2)
    ]
    layers = np.asarray(full[layer_].values, dtype=object)
    best_layer = xr.apply_ufunc(
        lambda i: np.where(np.isnan(i), "", layers[np.nan_to_num(i).astype(int)]), pick
    ).astype(object)
    attrs = {"measure": m.name, "split": "halves within each class", "seed": seed}
    return xr.Dataset(
        {
            f"best_layer_{m.slug}": best_layer.drop_vars(layer_, errors="ignore").assign_attrs(
                attrs
            ),
            f"best_score_{m.slug}": ((held[0] + held[1]) / 2)
            .drop_vars(layer_, errors="ignore")
            .assign_attrs(attrs),
        }
    )


def _argbest(m: Measure, sim: xr.DataArray, dim: str) -> xr.DataArray:
    """Index along ``dim`` of the best score (NaN where every score is NaN)."""
    values = sim.values
    axis = sim.dims.index(dim)
    allnan = np.isnan(values).all(axis=axis)
    filled = np.where(np.isnan(values), np.inf if m.distance else -np.inf, values)
    idx = (np.argmin if m.distance else np.argmax)(filled, axis=axis).astype(float)
    idx[allnan] = np.nan
    return sim.isel({dim: 0}, drop=True).copy(data=idx)


def _halves(s: Stack, seed: int) -> list[np.ndarray]:
    """Two halves of the stimuli, split at random within each class (or overall)."""
    rng = np.random.default_rng(seed)
    labels = s.label if s.label is not None else np.zeros(s.n, int)
    first, second = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        first += members[: len(members) // 2].tolist()
        second += members[len(members) // 2 :].tolist()
    if min(len(first), len(second)) < 4:
        raise ValueError(
            f"the best-matching layer is cross-validated over two halves of the stimuli; "
            f"{s.n} stimuli are too few (use at least 8)"
        )
    return [np.sort(first), np.sort(second)]


def bootstrap_diag_l2(
    rdms: xr.DataArray, *, n: int = 1000, seed: int = 0, progress: bool = False
) -> xr.DataArray:
    """Bootstrap samples of the diagonal L2 distance (:func:`repsim.rdm.diag_l2`, to each
    run's last layer): stimuli drawn with replacement, the same draws as :func:`bootstrap`
    with the same ``seed`` and stimuli.

    A draw with counts ``c`` weighs the within-class entry ``(s, t)`` by ``c_s c_t``, so
    ``L2² = cᵀ Q c`` with ``Q`` the squared within-class differences: no RDM is rebuilt.

    Returns
    -------
    xarray.DataArray
        ``diag_l2_resample (resample, ..., layer)``.
    """
    import xarray as xr

    _check_count("n", n)
    if LABEL not in rdms.coords or LAYER not in rdms.dims:
        raise ValueError(
            "bootstrap_diag_l2 needs RDMs (..., layer, stimulus, stimulus_) with labels"
        )
    rdms = rdms.transpose(..., LAYER, STIMULUS, STIMULUS_)
    labels = rdms[LABEL].values
    same = labels[:, None] == labels[None, :]
    values = np.asarray(rdms.values, np.float64)
    present = ~np.isnan(values).all(axis=(-1, -2))
    last = present.shape[-1] - 1 - np.argmax(present[..., ::-1], axis=-1)
    ref = np.take_along_axis(values, last[..., None, None, None], axis=-3)
    q = np.where(same, (values - ref) ** 2, 0.0)
    flat = torch.as_tensor(q.reshape(-1, *q.shape[-2:]))
    rng = np.random.default_rng(seed)
    k = len(labels)
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(n)])
    c = torch.as_tensor(counts, dtype=torch.float64)
    out = torch.einsum("bs,lst,bt->bl", c, flat, c).sqrt().numpy()
    samples = out.reshape(n, *q.shape[:-2])
    return xr.DataArray(
        samples.astype(np.float32),
        dims=(RESAMPLE, *rdms.dims[:-2]),
        coords={d: rdms[d] for d in rdms.dims[:-2] if d in rdms.coords},
        name="diag_l2_resample",
        attrs={"resampling": "bootstrap over stimuli", "seed": seed},
    )


_SEED = re.compile(r"^(?P<rule>.+?)/seed-(?P<seed>\d+)$")


def rule_of(run: str) -> str:
    """``bp/seed-2`` → ``bp``; a run without a seed is its own rule."""
    match = _SEED.match(run)
    return match["rule"] if match else run


def seed_summary(sim: xr.DataArray) -> xr.Dataset:
    """Scores between learning rules over seeds: for each pair of rules, the mean, min and
    max over pairs of their runs, a run never paired with itself. Answers "are two seeds
    of one rule more alike than two rules?".

    Returns
    -------
    xarray.Dataset
        ``mean``, ``min``, ``max`` and ``pairs`` (how many run pairs), dims ``(rule,
        layer, rule_, layer_)``.
    """
    import xarray as xr

    runs = [str(r) for r in sim[RUN].values]
    runs_ = [str(r) for r in sim[f"{RUN}_"].values]
    rules = list(dict.fromkeys(rule_of(r) for r in runs))
    rules_ = list(dict.fromkeys(rule_of(r) for r in runs_))
    sim = sim.transpose(RUN, LAYER, f"{RUN}_", f"{LAYER}_")
    stats = {
        k: np.full((len(rules), sim.sizes[LAYER], len(rules_), sim.sizes[f"{LAYER}_"]), np.nan)
        for k in ("mean", "min", "max")
    }
    pairs = np.zeros((len(rules), len(rules_)), int)
    for i, rule in enumerate(rules):
        for j, rule_ in enumerate(rules_):
            picks = [
                sim.values[a, :, b, :]
                for a, ra in enumerate(runs)
                for b, rb in enumerate(runs_)
                if rule_of(ra) == rule and rule_of(rb) == rule_ and ra != rb
            ]
            pairs[i, j] = len(picks)
            if picks:
                block = np.stack(picks)
                stats["mean"][i, :, j] = np.nanmean(block, 0)
                stats["min"][i, :, j] = np.nanmin(block, 0)
                stats["max"][i, :, j] = np.nanmax(block, 0)
    dims = ("rule", LAYER, "rule_", f"{LAYER}_")
    coords = {
        "rule": rules,
        LAYER: sim[LAYER].values,
        "rule_": rules_,
        f"{LAYER}_": sim[f"{LAYER}_"].values,
    }
    out = xr.Dataset({k: (dims, v) for k, v in stats.items()}, coords=coords)
    out["pairs"] = (("rule", "rule_"), pairs)
    out.attrs = dict(sim.attrs)
    return out


_measure = measure
