"""Comparisons on runs: every layer of every run against every layer of every other, with
the best-matching layers, bootstrap intervals, a permutation null and an untrained baseline.

    python -m repsim.compare ckpt/ --measure cka --bootstrap 1000 --permutations 1000
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from repsim import cli
from repsim.compare import inference
from repsim.compare.measures import compare, measure
from repsim.names import RUN, SG_LAYERS
from repsim.runs import Run, sg_marks, untrained

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["COMMAND", "analyse", "main", "similarity"]


def similarity(
    runs_a: Sequence[Run],
    runs_b: Sequence[Run] | None = None,
    *,
    measure: str = "cka",
    stimuli: str | None = None,
    device: str | torch.device = "auto",
    cache: str | os.PathLike | None = None,
    **extraction: Any,
) -> xr.DataArray:
    """Every layer of every run of ``runs_a`` against every layer of every run of
    ``runs_b`` (default ``runs_a``): ``similarity_<measure> (run, layer, run_, layer_)``.

    ``stimuli``, ``device``, ``cache`` and ``extraction`` are as for every runs-level
    analysis (:mod:`repsim.runs`); every run must get the same stimuli.
    """
    acts_a = _extract(runs_a, stimuli, device, cache, extraction)
    acts_b = acts_a if runs_b is None else _extract(runs_b, stimuli, device, cache, extraction)
    return compare(acts_a, acts_b, measure=measure, device=device)


def _extract(runs, stimuli, device, cache, extraction):
    from repsim.extract import extract_runs

    store = None if cache is None else Path(cache) / "activations.zarr"
    return extract_runs(runs, stimuli=stimuli, store=store, device=device, **extraction)


def analyse(
    runs: Sequence[Run],
    *,
    measure: str = "cka",
    stimuli: str | None = None,
    bootstrap: int = 0,
    permutations: int = 0,
    baseline: bool = True,
    ci: float = 0.95,
    keep_samples: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    cache: str | os.PathLike | None = None,
    **extraction: Any,
) -> xr.Dataset:
    """Compare every layer of every run with every layer of every other.

    Parameters ``runs``, ``stimuli``, ``device``, ``cache`` and ``extraction`` are those
    of every runs-level analysis (:mod:`repsim.runs`).

    Parameters
    ----------
    measure
        A :data:`repsim.compare.MEASURES` name: ``cka`` (unbiased linear CKA),
        ``rsa:spearman``, ``shape:procrustes``, ...
    bootstrap
        Number of bootstrap resamples of the stimuli (0: none). Adds the percentile
        interval ``similarity_<m>_ci`` (``quantile``, …) and the diagonal L2's,
        ``diag_l2_ci (quantile, run, layer)``, from the same draws.
    ci
        The intervals' coverage (0.95: the 2.5 and 97.5 percentiles).
    keep_samples
        Also return the bootstrap samples, ``similarity_<m>_resample (resample, run,
        layer, run_, layer_)``, from which the interval of any difference between two
        scores follows (:func:`repsim.compare.interval`); 4 bytes per resample and pair
        of layers (12 runs × 20 layers, 1000 resamples: 230 MB).
    permutations
        Number of stimulus permutations for the null (0: none): ``similarity_<m>_p``.
    baseline
        Also compare untrained copies of the runs (each reset with its own seed):
        ``similarity_<m>_init``, what the architecture alone gives.
    seed
        Seeds the resamples, permutations, the halves of the best-match cross-validation,
        and (``seed + i`` for the i-th run) the untrained copies.

    Returns
    -------
    xarray.Dataset
        ``similarity_<m> (run, layer, run_, layer_)``; ``best_layer_<m>`` and the
        cross-validated ``best_score_<m>`` ``(run, layer, run_)``; and those above.
    """
    import xarray as xr

    from repsim.rdm import rdm

    m = _measure(measure)
    progress = bool(extraction.get("progress", False))
    acts = _extract(runs, stimuli, device, cache, extraction)
    done = list(acts.attrs["runs"])
    sim = compare(acts, measure=m, device=device)
    parts = [sim, inference.best_match(acts, measure=m, seed=seed, device=device)]
    if bootstrap:
        samples = inference.bootstrap(
            acts, measure=m, n=bootstrap, seed=seed, device=device, progress=progress
        )
        ci_da = inference.interval(samples, ci).rename(f"{sim.name}_ci")
        l2 = inference.bootstrap_diag_l2(rdm(acts, device=device), n=bootstrap, seed=seed)
        parts += [ci_da, inference.interval(l2, ci).rename("diag_l2_ci")]
        if keep_samples:
            parts.append(samples)
    if permutations:
        parts.append(
            inference.permutation_test(
                acts, measure=m, n=permutations, seed=seed, device=device, progress=progress
            )
        )
    if baseline:
        fresh = [untrained(run, seed + i) for i, run in enumerate(runs) if run.name in done]
        init_acts = _extract(
            fresh, stimuli, device, None, {"batch_size": extraction.get("batch_size", 256)}
        )
        parts.append(compare(init_acts, measure=m, device=device).rename(f"{sim.name}_init"))
    datasets = [p.to_dataset() if isinstance(p, xr.DataArray) else p for p in parts]
    own = {name: dict(d[name].attrs) for d in datasets for name in d.data_vars}
    out = xr.merge(datasets, combine_attrs="drop", join="outer")
    attrs = {
        "runs": done,
        "measure": m.name,
        "stimuli": ", ".join(sorted({acts[r].attrs.get("stimuli", "") for r in done} - {""})),
        SG_LAYERS: {k: v for k, v in sg_marks(runs).items() if k in done},
    }
    for name in out.data_vars:
        out[name].attrs = {**own[name], **attrs}
    return out


_measure = measure


# ------------------------------------------------------------------- command line


def _add_arguments(p) -> None:
    p.add_argument(
        "--measure",
        default="cka",
        help="comma-separated measures: cka (unbiased linear, the default), cka:linear-biased, "
        "cka:rbf[:σ], rsa:corr|spearman|tau-a|rho-a|cosine, shape:procrustes|cca|<α>",
    )
    p.add_argument(
        "--bootstrap", type=int, default=0, help="bootstrap resamples of the stimuli (e.g. 1000)"
    )
    p.add_argument(
        "--keep-samples",
        action="store_true",
        help="store the bootstrap samples too (for intervals of differences between scores)",
    )
    p.add_argument(
        "--permutations", type=int, default=0, help="permutations for the null (e.g. 1000)"
    )
    p.add_argument(
        "--reference",
        help="the run the per-layer panel compares with (default: bp, else the first)",
    )
    p.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the untrained baseline"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the resampling and of the untrained copies"
    )


def _reference(runs: list[str], wanted: str | None) -> str:
    from repsim.compare.inference import rule_of

    if wanted is not None:
        if wanted not in runs and wanted not in {rule_of(r) for r in runs}:
            raise ValueError(f"--reference {wanted!r} is not a run ({', '.join(runs)})")
        return wanted
    for r in runs:
        if rule_of(r) == "bp":
            return "bp"
    return runs[0]


def _command(runs: list[Run], context: cli.Context) -> None:
    from repsim import plots

    args = context.args
    for name, value in (("--bootstrap", args.bootstrap), ("--permutations", args.permutations)):
        if value < 0:
            raise ValueError(f"{name} must be 0 (none) or a positive number, got {value}")
    measures = [measure(s) for s in args.measure.split(",") if s.strip()]
    if not measures:
        raise ValueError("--measure names no measure")
    figures = []
    for m in measures:
        computed = analyse(
            runs,
            measure=m,
            stimuli=args.stimuli,
            bootstrap=args.bootstrap,
            permutations=args.permutations,
            baseline=args.baseline,
            keep_samples=args.keep_samples,
            seed=args.seed,
            **context.analysis(),
        )
        results = context.save(computed)
        sim = results[f"similarity_{m.slug}"]
        reference = _reference([str(r) for r in sim[RUN].values], args.reference)
        fig = plots.compare_grid(results, m.slug, reference=reference)
        figures.append(context.figure(fig, f"compare_{m.slug}"))
        best = results[f"best_layer_{m.slug}"]
        runs_ = [str(r) for r in sim[f"{RUN}_"].values]
        ref_run = next(
            (r for r in runs_ if r == reference or r.startswith(f"{reference}/")), runs_[0]
        )
        context.summary(
            f"{m.name}: best-matching layer of {ref_run} (cross-validated score)",
            results,
            best.sel({f"{RUN}_": ref_run}),
            lambda run, i, b=best, r=ref_run, s=results[f"best_score_{m.slug}"]: _cell(
                b, s, run, i, r
            ),
            figures[-1:],
            width=16,
        )


def _cell(best, score, run: str, i: int, ref: str) -> str:
    layer = best.sel({RUN: run, f"{RUN}_": ref}).values[i]
    value = float(score.sel({RUN: run, f"{RUN}_": ref}).values[i])
    return "—" if not layer or np.isnan(value) else f"{layer} {value:.2f}"


_DESCRIPTION = (
    "Which layer of each network matches which layer of the others: CKA, RSA, shape metrics."
)
COMMAND = cli.Command("compare", _DESCRIPTION, _command, _add_arguments)
#: ``python -m repsim.compare``: layer × layer comparisons of every run, stored and plotted.
main = COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
