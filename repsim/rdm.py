"""Representational dissimilarity matrices per layer, and how they converge to the last layer.

RDM_ij = 1 − Pearson corr(h_i, h_j) over a layer's units (Kriegeskorte et al. 2008; the
paper's Figures 3 and 7). All layers of all runs are computed together: layers of equal
width are stacked and multiplied in one batched matrix product.

Command line::

    python -m repsim.rdm ckpt/        # extract (or reuse) activations, RDMs, diagonal L2, figures
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from repsim.store import STIMULUS, UNIT

__all__ = ["METRICS", "diag_l2", "rdm"]

Metric = Literal["correlation", "cosine", "euclidean"]
METRICS: tuple[str, ...] = ("correlation", "cosine", "euclidean")
STIMULUS_ = STIMULUS + "_"
_BATCH_BYTES = 1 << 30  # how much of the output one batched product may produce at once


def _unit_rows(x: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit norm (after centring) and a mask of rows that could not be."""
    if center:
        x = x - x.mean(dim=-1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    # a row whose spread is at float rounding level of its values is constant: call it zero
    dead = norm <= 1e-6 * (x.abs().amax(dim=-1, keepdim=True) + torch.finfo(x.dtype).tiny)
    return torch.where(dead, 0.0, x / torch.where(dead, 1.0, norm)), dead.squeeze(-1)


def _symmetric_pairs(x: torch.Tensor, pair, block: int = 512) -> torch.Tensor:
    """``out[..., i, j] = pair(x_i-block, x_j-block)`` for ``j >= i`` blocks, mirrored below.

    Computing only the upper block triangle halves the matrix-product work and makes the
    result symmetric by construction; the diagonal blocks are symmetrised explicitly.
    """
    lead, n = x.shape[:-2], x.shape[-2]
    x = x.reshape(-1, n, x.shape[-1])
    out = torch.empty((x.shape[0], n, n), dtype=x.dtype, device=x.device)
    for i in range(0, n, block):
        j = min(i + block, n)
        tile = pair(x[:, i:j], x[:, i:])  # [B, j - i, n - i]
        diag = tile[:, :, : j - i]
        tile[:, :, : j - i] = (diag + diag.transpose(-1, -2)) / 2
        out[:, i:j, i:] = tile
        out[:, j:, i:j] = tile[:, :, j - i :].transpose(-1, -2)
    out.diagonal(dim1=-2, dim2=-1).zero_()
    return out.reshape(*lead, n, n)


def _one_minus_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    one = torch.ones((), dtype=a.dtype, device=a.device)
    return torch.baddbmm(one, a, b.transpose(-1, -2), beta=1, alpha=-1)


def _euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    sq_a, sq_b = (a * a).sum(-1), (b * b).sum(-1)
    d = torch.baddbmm(sq_a.unsqueeze(-1) + sq_b.unsqueeze(-2), a, b.transpose(-1, -2), alpha=-2)
    return d.clamp_min_(0).sqrt_()


def _rdm(x: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., n, d]`` → (RDMs ``[..., n, n]``, zero-variance mask ``[..., n]``)."""
    if metric == "euclidean":
        x = x.double()  # |a|² + |b|² − 2ab cancels badly in float32 for nearby points
        x = x - x.mean(dim=-2, keepdim=True)  # distances do not change; the cancellation does
        dead = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
        return _symmetric_pairs(x, _euclidean).float(), dead
    u, dead = _unit_rows(x.float(), center=metric == "correlation")
    return _symmetric_pairs(u, _one_minus_dot), dead


def _check_finite(x: np.ndarray, where: str) -> np.ndarray:
    """``x``, or a ValueError naming ``where`` if some activation is NaN or inf."""
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{where}: {bad:,} of {x.size:,} activations are NaN or inf, so its RDM would be "
            "NaN; RDMs need finite activations (check the network's weights: "
            "python -m repsim.norms reports non-finite ones)"
        )
    return x


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(
            f"unknown metric {metric!r}: expected one of {', '.join(map(repr, METRICS))}"
        )


def _coords_(acts) -> dict:
    """The stimulus coordinates, copied onto the second stimulus axis (``label_``, ...)."""
    coords = {}
    for name, c in acts.coords.items():
        if c.dims == (STIMULUS,):
            coords[name] = c
            coords[f"{name}_"] = ((STIMULUS_,), c.values)
    return coords


def rdm(acts, *, metric: Metric = "correlation", device: str | torch.device = "cpu"):
    """Dissimilarity between every pair of stimuli, over the ``unit`` dim.

    Parameters
    ----------
    acts
        A DataArray ``(..., stimulus, unit)`` — one layer, or layers stacked on leading
        dims — or an activations tree (:func:`repsim.store.open_activations`, or
        :func:`repsim.extract.extract` for one run) whose layers may differ in width.
    metric
        ``"correlation"``: 1 − Pearson correlation (the paper's); ``"cosine"``: 1 − cosine
        similarity; ``"euclidean"``: the true Euclidean distance (not squared), computed
        in float64.

    Returns
    -------
    xarray.DataArray
        ``rdm`` with dims ``(..., stimulus, stimulus_)`` — for a tree ``(run, layer,
        stimulus, stimulus_)`` — and the stimulus coordinates on both axes (``label``,
        ``index`` on ``stimulus``; ``label_``, ``index_`` on ``stimulus_``). float32,
        symmetric, zero diagonal.

    Notes
    -----
    A stimulus whose activations are constant over units (a ReLU layer it silences
    entirely) has no correlation with anything. Its correlation (or cosine, for an
    all-zero row) with every other stimulus is taken to be 0, so its dissimilarity to
    every other stimulus is 1, and 0 to itself; a warning gives the count of such stimuli.

    Examples
    --------
    >>> import xarray as xr
    >>> acts = xr.DataArray(np.random.rand(6, 4), dims=("stimulus", "unit"))
    >>> rdm(acts).sizes
    Frozen({'stimulus': 6, 'stimulus_': 6})
    """
    import xarray as xr

    _check_metric(metric)
    if isinstance(acts, xr.DataTree):
        return _rdm_tree(acts, metric, device)
    if not isinstance(acts, xr.DataArray) or STIMULUS not in acts.dims or UNIT not in acts.dims:
        raise ValueError(
            f"rdm needs a DataArray with dims ({STIMULUS!r}, {UNIT!r}) or an activations tree; got {type(acts).__name__} {getattr(acts, 'dims', '')}"
        )
    acts = acts.transpose(..., STIMULUS, UNIT)
    values = _check_finite(np.asarray(acts.values), f"the activations {acts.name or ''}".rstrip())
    x = torch.as_tensor(values, device=torch.device(device))
    d, dead = _rdm(x, metric)
    _warn_dead(dead, metric, "")
    lead = {k: v for k, v in acts.coords.items() if STIMULUS not in v.dims and UNIT not in v.dims}
    return xr.DataArray(
        d.cpu().numpy(), dims=(*acts.dims[:-2], STIMULUS, STIMULUS_),
        coords={**lead, **_coords_(acts)}, name="rdm", attrs={"metric": metric},
    )  # fmt: skip


def _warn_dead(dead: torch.Tensor, metric: str, where: str) -> None:
    if metric != "euclidean" and bool(dead.any()):
        count = int(dead.sum())
        warnings.warn(
            f"{count} stimulus activation(s){where} are constant over units: their {metric} "
            "dissimilarity to every other stimulus is set to 1 (see repsim.rdm.rdm)",
            stacklevel=3,
        )


def _rdm_tree(tree, metric: str, device) -> object:
    import xarray as xr

    from repsim.store import iter_layers

    items = list(iter_layers(tree))
    if not items:
        raise ValueError("the activations tree holds no layers")
    runs = list(dict.fromkeys(run for run, _, _ in items))
    layers = list(dict.fromkeys(layer for _, layer, _ in items))
    first = items[0][2]
    for run, layer, a in items:
        if a.sizes[STIMULUS] != first.sizes[STIMULUS] or not np.array_equal(
            a["index"].values, first["index"].values
        ):
            raise ValueError(
                f"run {run!r} layer {layer!r} was extracted on other stimuli than run "
                f"{items[0][0]!r}: RDMs can be compared only over the same stimuli; extract "
                "every run with the same --stimuli"
            )
    n = first.sizes[STIMULUS]
    out = np.full((len(runs), len(layers), n, n), np.nan, np.float32)
    by_width: dict[int, list[tuple[str, int, int, object]]] = {}
    for run, layer, a in items:
        where = f"layer {layer!r}" + (f" of run {run!r}" if run else "")
        by_width.setdefault(a.sizes[UNIT], []).append(
            (where, runs.index(run), layers.index(layer), a)
        )
    dead_total = 0
    dev = torch.device(device)
    for width, group in by_width.items():
        step = max(1, _BATCH_BYTES // (4 * n * max(n, width)))
        for s in range(0, len(group), step):
            part = group[s : s + step]
            x = np.stack([_check_finite(np.asarray(a.values), where) for where, _, _, a in part])
            x = torch.as_tensor(x, device=dev)
            d, dead = _rdm(x, metric)
            dead_total += int(dead.sum())
            d = d.cpu().numpy()
            for k, (_, i, j, _) in enumerate(part):
                out[i, j] = d[k]
    if dead_total:
        _warn_dead(
            torch.ones(dead_total, dtype=torch.bool), metric, " (summed over layers and runs)"
        )
    return xr.DataArray(
        out, dims=("run", "layer", STIMULUS, STIMULUS_),
        coords={"run": runs, "layer": layers, **_coords_(first.compute())},
        name="rdm", attrs={"metric": metric},
    )  # fmt: skip


def diag_l2(rdms, *, reference: str = "last"):
    """L2 distance between each layer's within-class RDM entries and the reference layer's.

    Parameters
    ----------
    rdms
        ``rdm`` DataArray ``(..., layer, stimulus, stimulus_)`` with a ``label``
        coordinate (and ``label_``) on the stimulus axes.
    reference
        ``"last"``: each run's last layer (the last along ``layer`` that is not missing);
        a layer name; or an RDM DataArray ``(stimulus, stimulus_)``, e.g. BP's last layer,
        matched to ``rdms`` by the ``index`` coordinate.

    Returns
    -------
    xarray.DataArray
        ``diag_l2`` with dims ``(..., layer)``: ``sqrt(Σ_{label_i = label_j} (R_ij − Ref_ij)²)``.
        Within-class means by the ``label`` coordinates, not by position, so the order of
        the stimuli does not matter.

    Examples
    --------
    >>> import xarray as xr
    >>> acts = xr.DataArray(np.random.rand(2, 6, 4), dims=("layer", "stimulus", "unit"),
    ...                     coords={"label": ("stimulus", [0, 0, 0, 1, 1, 1])})
    >>> diag_l2(rdm(acts)).values[-1]
    0.0
    """
    import xarray as xr

    for name in ("label", "label_"):
        if name not in rdms.coords:
            raise ValueError(
                f"diag_l2 needs the stimuli's classes as coordinate {name!r} of the RDMs (rdm() keeps it)"
            )
    if "layer" not in rdms.dims:
        raise ValueError("diag_l2 needs RDMs with a 'layer' dim")
    _check_pairs(rdms["label"].values)
    same = xr.DataArray(
        rdms["label"].values[:, None] == rdms["label_"].values[None, :], dims=(STIMULUS, STIMULUS_)
    )
    if isinstance(reference, xr.DataArray):
        ref = _align(reference, rdms)
    elif reference == "last":
        present = rdms.notnull().any([STIMULUS, STIMULUS_])
        last = present.cumsum("layer").argmax("layer")  # index of the last layer present
        ref = rdms.isel(layer=last).drop_vars("layer")
    elif isinstance(reference, str) and reference in rdms["layer"].values:
        ref = rdms.sel(layer=reference).drop_vars("layer")
    else:
        raise ValueError(
            f"reference must be 'last', a layer ({', '.join(map(str, rdms['layer'].values))}) or an RDM DataArray, got {reference!r}"
        )
    sq = ((rdms - ref) ** 2).where(same, 0.0).sum([STIMULUS, STIMULUS_], skipna=False)
    out = np.sqrt(sq).astype(np.float64).rename("diag_l2")
    out.attrs = {"reference": reference if isinstance(reference, str) else "given RDM"}
    return out.where(rdms.notnull().any([STIMULUS, STIMULUS_]))


def _check_pairs(labels: np.ndarray) -> None:
    """Refuse stimuli with no two of one class; warn about classes with a single stimulus."""
    classes, counts = np.unique(labels, return_counts=True)
    if not (counts >= 2).any():
        raise ValueError(
            f"no class has two stimuli ({len(labels)} stimuli, {len(classes)} classes): the "
            "within-class (diagonal-block) entries are only the zero diagonal, so the diagonal "
            "L2 would be 0 whatever the network; use at least 2 stimuli per class (the paper: 40)"
        )
    single = classes[counts < 2]
    if len(single):
        warnings.warn(
            f"class(es) {', '.join(map(str, single.tolist()))} have a single stimulus: they add "
            "nothing to the diagonal L2; use at least 2 stimuli per class (the paper: 40)",
            stacklevel=3,
        )


def _align(reference, rdms):
    """The reference RDM reordered to ``rdms``'s stimuli (by ``index``), or an error."""
    import xarray as xr

    for name in ("index", "index_"):
        if name not in reference.coords or name not in rdms.coords:
            raise ValueError(
                f"a reference RDM is matched to the RDMs by the coordinate {name!r}, which is missing"
            )
    want, have = rdms["index"].values, reference["index"].values
    if sorted(want.tolist()) != sorted(have.tolist()):
        raise ValueError(
            "the reference RDM is over other stimuli than the RDMs "
            f"({len(set(have) ^ set(want))} indices differ): compare RDMs over the same stimuli"
        )
    pos = {v: i for i, v in enumerate(have.tolist())}
    order = [pos[v] for v in want.tolist()]
    ref = reference.isel({STIMULUS: order, STIMULUS_: order})
    return xr.DataArray(ref.values, dims=(STIMULUS, STIMULUS_))


def main(argv: Sequence[str] | None = None, *, failures=None) -> int:
    """``python -m repsim.rdm``: RDMs and diagonal L2 of every run, stored and plotted.

    ``failures`` (a :class:`repsim._cli.Failures`, as :mod:`repsim.report` passes) collects
    the runs that fail; without it, this command lists them itself.
    """
    import sys

    from repsim import _cli, extract, plots, store

    p = _cli.parser("rdm", "RDMs per layer and their diagonal-block L2 distance to the last layer.")
    p.add_argument("--metric", default="correlation", choices=METRICS)
    args = p.parse_args(argv)
    own = failures is None
    failures = _cli.Failures(p.prog, argv, args.debug) if own else failures
    try:
        out = _cli.results_path(args)
        acts_path = _cli.out_dir(args) / "activations.zarr"
        infos = extract.extract_runs(args, acts_path, failures=failures)
        runs = [run for run, _ in infos]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            acts = store.open_activations(acts_path, runs=runs)
            rdms = rdm(acts, metric=args.metric, device=extract.resolve_device(args.device))
            distances = diag_l2(rdms)
        for w in caught:
            print(f"note: {w.message}", file=sys.stderr)
        provenance = {"activations": str(acts_path), "runs": runs, "metric": args.metric}
        store.write_result(out, rdms, provenance=provenance)
        store.write_result(out, distances, provenance=provenance)
        figs = [
            _cli.save_figure(plots.rdm_grid(rdms), out, "rdm"),
            _cli.save_figure(
                plots.diag_l2_curves(distances, marks=extract.sg_marks(infos)), out, "diag_l2"
            ),
        ]
    except _cli.ERRORS as err:
        return failures.fail(err)
    _cli.layer_table(
        f"diagonal L2 to the last layer ({args.metric} RDMs over {rdms.sizes[STIMULUS]} stimuli)",
        runs, [str(v) for v in distances["layer"].values],
        lambda run, i: f"{float(distances.sel(run=run).values[i]):.2f}",
    )  # fmt: skip
    print(f"\n→ {out} (rdm, diag_l2), {', '.join(map(str, figs))}")
    return failures.end() if own else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
