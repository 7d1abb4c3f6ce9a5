"""Representational dissimilarity matrices per layer, and how they converge to the last layer.

RDM_ij = 1 − Pearson corr(h_i, h_j) over a layer's units (Kriegeskorte et al. 2008; the
paper's Figures 3 and 7). All layers of all runs are computed together: layers of equal
width are stacked and multiplied in one batched matrix product.

On runs (:mod:`repsim.runs`), :func:`analyse` extracts the stimuli's activations and
returns both results; from the command line::

    python -m repsim.rdm ckpt/        # extract (or reuse) activations, RDMs, diagonal L2, figures
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from repsim import cli
from repsim.batching import by_shape
from repsim.devices import resolve_device
from repsim.names import INDEX, LABEL, LAYER, RUN, SG_LAYERS, STIMULUS, STIMULUS_, UNIT
from repsim.runs import Run, sg_marks

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["METRICS", "analyse", "diag_l2", "main", "rdm"]

Metric = Literal["correlation", "cosine", "euclidean"]
METRICS: tuple[str, ...] = ("correlation", "cosine", "euclidean")


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


def rdm(
    acts: xr.DataArray | xr.DataTree,
    *,
    metric: Metric = "correlation",
    device: str | torch.device = "auto",
) -> xr.DataArray:
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
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...

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
    x = torch.as_tensor(values, device=resolve_device(device))
    d, dead = _rdm(x, metric)
    _warn_dead(dead, metric, "")
    lead = {k: v for k, v in acts.coords.items() if STIMULUS not in v.dims and UNIT not in v.dims}
    return xr.DataArray(
        d.cpu().numpy(),
        dims=(*acts.dims[:-2], STIMULUS, STIMULUS_),
        coords={**lead, **_coords_(acts)},
        name="rdm",
        attrs={"metric": metric},
    )


def _warn_dead(dead: torch.Tensor, metric: str, where: str) -> None:
    if metric != "euclidean" and bool(dead.any()):
        count = int(dead.sum())
        warnings.warn(
            f"{count} stimulus activation(s){where} are constant over units: their {metric} "
            "dissimilarity to every other stimulus is set to 1 (see repsim.rdm.rdm)",
            stacklevel=3,
        )


def _rdm_tree(tree, metric: str, device) -> xr.DataArray:
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
            a[INDEX].values, first[INDEX].values
        ):
            raise ValueError(
                f"run {run!r} layer {layer!r} was extracted on other stimuli than run "
                f"{items[0][0]!r}: RDMs can be compared only over the same stimuli; extract "
                "every run with the same --stimuli"
            )
    n = first.sizes[STIMULUS]
    out = np.full((len(runs), len(layers), n, n), np.nan, np.float32)
    located = [
        (
            f"layer {layer!r}" + (f" of run {run!r}" if run else ""),
            runs.index(run),
            layers.index(layer),
            a,
        )
        for run, layer, a in items
    ]
    dead_total = 0
    dev = resolve_device(device)
    for part in by_shape(
        located, shape=lambda item: item[3].sizes[UNIT], nbytes=lambda width: 4 * n * max(n, width)
    ):
        x = np.stack([_check_finite(np.asarray(a.values), where) for where, _, _, a in part])
        d, dead = _rdm(torch.as_tensor(x, device=dev), metric)
        dead_total += int(dead.sum())
        d = d.cpu().numpy()
        for k, (_, i, j, _) in enumerate(part):
            out[i, j] = d[k]
    if dead_total:
        _warn_dead(
            torch.ones(dead_total, dtype=torch.bool), metric, " (summed over layers and runs)"
        )
    return xr.DataArray(
        out,
        dims=(RUN, LAYER, STIMULUS, STIMULUS_),
        coords={RUN: runs, LAYER: layers, **_coords_(first.compute())},
        name="rdm",
        attrs={"metric": metric},
    )


def diag_l2(rdms: xr.DataArray, *, reference: str | xr.DataArray = "last") -> xr.DataArray:
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

    for name in (LABEL, LABEL + "_"):
        if name not in rdms.coords:
            raise ValueError(
                f"diag_l2 needs the stimuli's classes as coordinate {name!r} of the RDMs (rdm() keeps it)"
            )
    if LAYER not in rdms.dims:
        raise ValueError(f"diag_l2 needs RDMs with a {LAYER!r} dim")
    _check_pairs(rdms[LABEL].values)
    same = xr.DataArray(
        rdms[LABEL].values[:, None] == rdms[LABEL + "_"].values[None, :],
        dims=(STIMULUS, STIMULUS_),
    )
    if isinstance(reference, xr.DataArray):
        ref = _align(reference, rdms)
    elif reference == "last":
        present = rdms.notnull().any([STIMULUS, STIMULUS_])
        last = present.cumsum(LAYER).argmax(LAYER)  # index of the last layer present
        ref = rdms.isel({LAYER: last}).drop_vars(LAYER)
    elif isinstance(reference, str) and reference in rdms[LAYER].values:
        ref = rdms.sel({LAYER: reference}).drop_vars(LAYER)
    else:
        raise ValueError(
            f"reference must be 'last', a layer ({', '.join(map(str, rdms[LAYER].values))}) or an RDM DataArray, got {reference!r}"
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

    for name in (INDEX, INDEX + "_"):
        if name not in reference.coords or name not in rdms.coords:
            raise ValueError(
                f"a reference RDM is matched to the RDMs by the coordinate {name!r}, which is missing"
            )
    want, have = rdms[INDEX].values, reference[INDEX].values
    if sorted(want.tolist()) != sorted(have.tolist()):
        raise ValueError(
            "the reference RDM is over other stimuli than the RDMs "
            f"({len(set(have) ^ set(want))} indices differ): compare RDMs over the same stimuli"
        )
    pos = {v: i for i, v in enumerate(have.tolist())}
    order = [pos[v] for v in want.tolist()]
    ref = reference.isel({STIMULUS: order, STIMULUS_: order})
    return xr.DataArray(ref.values, dims=(STIMULUS, STIMULUS_))


# ------------------------------------------------------------------- runs


def analyse(
    runs: Sequence[Run],
    *,
    stimuli: str | None = None,
    metric: Metric = "correlation",
    device: str | torch.device = "auto",
    cache: str | os.PathLike | None = None,
    **extraction: Any,
) -> xr.Dataset:
    """RDMs and their diagonal L2 to the last layer, for every run.

    Parameters ``runs``, ``device``, ``cache`` and ``extraction`` are those of every
    runs-level analysis (:mod:`repsim.runs`); the cache keeps
    ``activations.zarr``.

    Parameters
    ----------
    stimuli
        ``<dataset>:<split>:<n|all>`` (``{dataset}``: the run's own); default the paper's
        400 test points of each run's dataset. Every run must get the same stimuli.

    Returns
    -------
    xarray.Dataset
        ``rdm (run, layer, stimulus, stimulus_)`` and ``diag_l2 (run, layer)``, as
        :func:`rdm` and :func:`diag_l2` compute them; their attrs record the runs, the
        stimuli and where synthetic gradients sit (``sg_layers``, for the figures).
        Warnings of the two (constant stimuli, single-stimulus classes) are raised.

    Examples
    --------
    >>> from repsim import runs
    >>> net = torch.nn.Sequential(torch.nn.Linear(784, 8), torch.nn.ReLU())
    >>> analyse([runs.from_model(net, ["0", "1"])], stimuli="mnist-5k:test:40", device="cpu").diag_l2.dims
    ('run', 'layer')
    """
    import xarray as xr

    from repsim.extract import extract_runs

    store = None if cache is None else Path(cache) / "activations.zarr"
    acts = extract_runs(runs, stimuli=stimuli, store=store, device=device, **extraction)
    done = list(acts.attrs["runs"])
    rdms = rdm(acts, metric=metric, device=device)
    attrs = {
        "runs": done,
        "metric": metric,
        "stimuli": ", ".join(sorted({acts[r].attrs["stimuli"] for r in done})),
        SG_LAYERS: {k: v for k, v in sg_marks(runs).items() if k in done},
        **({} if store is None else {"activations": str(store)}),
    }
    rdms.attrs.update(attrs)
    distances = diag_l2(rdms)
    distances.attrs.update(attrs)
    return xr.Dataset({"rdm": rdms, "diag_l2": distances})


def _add_arguments(p) -> None:
    p.add_argument("--metric", default="correlation", choices=METRICS)


def _command(runs: list[Run], context: cli.Context) -> None:
    from repsim import plots

    args = context.args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        computed = context.map(
            analyse,
            runs,
            stimuli=args.stimuli,
            metric=args.metric,
            **context.analysis(),
        )
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    results = context.save(computed)
    rdms, distances = results["rdm"], results["diag_l2"]
    figs = [
        context.figure(plots.rdm_grid(rdms), "rdm"),
        context.figure(plots.diag_l2_curves(distances), "diag_l2"),
    ]
    context.summary(
        f"diagonal L2 to the last layer ({args.metric} RDMs over {rdms.sizes[STIMULUS]} stimuli)",
        results,
        distances,
        lambda run, i: f"{float(distances.sel({RUN: run}).values[i]):.2f}",
        figs,
    )


_DESCRIPTION = "RDMs per layer and their diagonal-block L2 distance to the last layer."
COMMAND = cli.Command("rdm", _DESCRIPTION, _command, _add_arguments)
#: ``python -m repsim.rdm``: RDMs and diagonal L2 of every run, stored and plotted.
main = COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
