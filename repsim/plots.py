"""Figures of the paper's analyses. Every function takes xarray objects (never paths) and
returns a matplotlib Figure; saving is the caller's business."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np

from repsim.names import LABEL, LAYER, RUN, SG_LAYERS, SPLIT

__all__ = [
    "compare_grid",
    "diag_l2_curves",
    "learning_curves",
    "probe_curves",
    "rdm_grid",
    "weight_norm_curves",
]


def _pyplot():
    import matplotlib.pyplot as plt  # the caller's backend: inline in Jupyter, Agg in the CLIs

    return plt


def rdm_grid(
    rdms,
    *,
    layers: Sequence[str] | None = None,
    max_columns: int = 6,
    cmap: str = "viridis",
    size: float = 1.9,
):
    """RDMs as a grid in the style of the paper's Figures 3 and 7.

    Rows are runs, columns are layers (default: up to ``max_columns`` spread from first to
    last). Class blocks (by the ``label`` coordinate) are outlined and the entries outside
    them de-emphasised, so that within-class structure stands out.

    Parameters
    ----------
    rdms
        ``rdm`` DataArray ``(run, layer, stimulus, stimulus_)`` or ``(layer, stimulus,
        stimulus_)``, stimuli sorted by label for the blocks to be contiguous.
    cmap
        Colour map; dark is similar (low dissimilarity) with the default ``viridis``, as in
        the paper.
    size
        Inches per panel.
    """
    plt = _pyplot()
    if RUN not in rdms.dims:
        rdms = rdms.expand_dims({RUN: [""]})
    all_layers = [str(v) for v in rdms[LAYER].values]
    if layers is None:
        picks = np.unique(
            np.linspace(0, len(all_layers) - 1, min(max_columns, len(all_layers)))
            .round()
            .astype(int)
        )
        layers = [all_layers[i] for i in picks]
    runs = [str(v) for v in rdms[RUN].values]
    fig, axes = plt.subplots(
        len(runs),
        len(layers),
        figsize=(size * len(layers) + 0.6, size * len(runs) + 0.4),
        squeeze=False,
    )
    labels = np.asarray(rdms[LABEL].values)
    edges = np.flatnonzero(np.diff(labels)) + 0.5
    bounds = np.concatenate([[-0.5], edges, [len(labels) - 0.5]])
    same = labels[:, None] == labels[None, :]
    vmax = float(np.nanpercentile(rdms.values, 99)) or 1.0
    image = None
    for i, run in enumerate(runs):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            r = (
                rdms.sel({RUN: run, LAYER: layer}).values
                if runs != [""]
                else rdms.sel({LAYER: layer}).isel({RUN: 0}).values
            )
            image = ax.imshow(r, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.imshow(
                np.where(same, np.nan, 1.0),
                cmap="Greys",
                alpha=0.45,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            for a, b in pairwise(bounds):
                ax.add_patch(plt.Rectangle((a, a), b - a, b - a, fill=False, lw=0.6, ec="white"))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(layer, fontsize=9)
            if j == 0:
                ax.set_ylabel(run, fontsize=9)
    metric = rdms.attrs.get("metric", "")
    label = {"correlation": "1 − Pearson r", "cosine": "1 − cosine"}.get(
        metric, metric or "dissimilarity"
    )
    fig.colorbar(image, ax=axes, shrink=0.6, label=label)
    return fig


def diag_l2_curves(distances, *, marks: Mapping[str, Sequence[str]] | None = None):
    """Diagonal-block L2 distance to the reference layer, one curve per run.

    Parameters
    ----------
    distances
        ``diag_l2`` DataArray ``(run, layer)`` or ``(layer,)``.
    marks
        Run → layers to mark with a dotted vertical line (e.g. where SGs sit); default the
        result's ``sg_layers`` attribute, which the runs-level analyses record.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    reference = distances.attrs.get("reference", "last")
    _layer_curves(ax, distances, f"diagonal L2 to {reference} layer", marks=marks)
    fig.tight_layout()
    return fig


def _layer_curves(ax, data, ylabel: str, *, marks: Mapping[str, Sequence[str]] | None = None):
    """One line per run (and per ``split`` when present) over the ``layer`` dim; ``marks``
    (default: the data's ``sg_layers`` attribute) as dotted vertical lines."""
    import seaborn as sns

    if marks is None:
        marks = data.attrs.get(SG_LAYERS) or {}
    if RUN not in data.dims:
        data = data.expand_dims({RUN: [""]})
    layers = [str(v) for v in data[LAYER].values]
    xs = np.arange(1, len(layers) + 1)
    colors = sns.color_palette("colorblind", len(data[RUN]))
    splits = [str(s) for s in data[SPLIT].values] if SPLIT in data.dims else [None]
    dashes = {"train": "-", "test": "--"}  # the paper's Figure 8 shows training accuracy
    for color, run in zip(colors, data[RUN].values, strict=True):
        for split in splits:
            y = data.sel({RUN: run}) if split is None else data.sel({RUN: run, SPLIT: split})
            label = " ".join(p for p in (str(run), split) if p)
            ax.plot(
                xs,
                y.values,
                marker="o",
                ms=3,
                color=color,
                ls=dashes.get(split, "-"),
                label=label or None,
            )
        for layer in marks.get(str(run), []):
            if layer in layers:
                ax.axvline(layers.index(layer) + 1, ls=":", color=color, lw=1)
    ax.set_xticks(xs, layers, rotation=90 if len(layers) > 10 else 0, fontsize=8)
    ax.set_xlabel(LAYER)
    ax.set_ylabel(ylabel)
    if any(str(r) for r in data[RUN].values) or splits != [None]:
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    sns.despine(ax=ax)


def probe_curves(accuracy=None, mse=None, *, marks: Mapping[str, Sequence[str]] | None = None):
    """Linear probes per layer (the paper's Figure 8): classifier accuracy and regressor MSE.

    Parameters
    ----------
    accuracy, mse
        ``probe_accuracy`` / ``probe_mse`` DataArrays ``(run, layer, split)``; either may be
        None. ``train`` solid (what the paper's Figure 8 plots), held-out (``test``) dashed.
    """
    plt = _pyplot()
    panels = [
        (a, label)
        for a, label in ((accuracy, "classifier probe accuracy"), (mse, "regressor probe MSE"))
        if a is not None
    ]
    if not panels:
        raise ValueError("probe_curves needs probe_accuracy, probe_mse or both")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.6), squeeze=False)
    for ax, (data, label) in zip(axes[0], panels, strict=True):
        _layer_curves(ax, data, label, marks=marks)
    fig.tight_layout()
    return fig


def weight_norm_curves(norms, *, marks: Mapping[str, Sequence[str]] | None = None):
    """Normalised squared Frobenius norm of each hidden layer's weights (Figure 5).

    Parameters
    ----------
    norms
        ``weight_norm`` DataArray ``(run, layer)``, summing to 1 over layers.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    _layer_curves(ax, norms, "normalised weight norm", marks=marks)
    fig.tight_layout()
    return fig


def learning_curves(
    history,
    *,
    metrics: Sequence[str] = ("train_accuracy", "test_accuracy"),
    error: bool = False,
):
    """Accuracy (or any column of ``history.csv``) per epoch, one line per run (Figure 4).

    Parameters
    ----------
    history
        Dataset ``(run, epoch)`` with one variable per metric, as
        :func:`repsim.store.read_histories` returns.
    error
        Plot the error ``1 − accuracy`` on a log scale instead (the paper's Figure 4 style:
        differences near 100 % accuracy become visible).
    """
    import seaborn as sns

    plt = _pyplot()
    missing = [m for m in metrics if m not in history]
    if missing:
        raise ValueError(
            f"history has no {', '.join(missing)}; it has {', '.join(history.data_vars)}"
        )
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False, sharey=True
    )
    colors = sns.color_palette("colorblind", len(history[RUN]))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for color, run in zip(colors, history[RUN].values, strict=True):
            y = history[metric].sel({RUN: run}).values
            ax.plot(history["epoch"].values, 1 - y if error else y, color=color, label=str(run))
        ax.set_xlabel("epoch")
        title = metric.replace("_", " ")
        if error:
            ax.set_yscale("log")
            title = title.replace("accuracy", "error (1 − accuracy)")
        ax.set_title(title, fontsize=10)
        sns.despine(ax=ax)
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def sg_quality_curves(quality, *, measures: Sequence[str] = ("sg_cosine", "sg_relative_error")):
    """How close each synthetic gradient is to the true gradient over training.

    One panel per run (rows) and measure (columns), one curve per SG position, coloured
    by depth (light: near the input, dark: near the output).

    Parameters
    ----------
    quality
        DataArray ``(run, measure, position, step)`` as
        :func:`repsim.store.read_sg_quality` returns (NaN where a run has no such position).
    """
    import seaborn as sns

    plt = _pyplot()
    if RUN not in quality.dims:
        quality = quality.expand_dims({RUN: [""]})
    missing = [m for m in measures if m not in quality["measure"].values]
    if missing:
        raise ValueError(
            f"no measure {', '.join(missing)}; have {', '.join(map(str, quality['measure'].values))}"
        )
    runs = [str(r) for r in quality[RUN].values]
    fig, axes = plt.subplots(
        len(runs), len(measures), figsize=(4.8 * len(measures), 2.8 * len(runs)), squeeze=False
    )
    positions = [int(p) for p in quality["position"].values]
    colors = dict(zip(positions, sns.color_palette("viridis_r", len(positions)), strict=True))
    steps = quality["step"].values
    for i, run in enumerate(runs):
        for j, measure in enumerate(measures):
            ax = axes[i, j]
            data = quality.sel({RUN: run, "measure": measure})
            shown = []
            for p in positions:
                y = data.sel(position=p).values
                if np.isfinite(y).any():
                    ax.plot(steps, y, color=colors[p], lw=1)
                    shown.append(p)
            where = (
                f"SG after layer {shown[0]}"
                if len(shown) == 1
                else f"SGs after layers {shown[0]}–{shown[-1]}, dark = deeper"
                if shown
                else ""
            )
            if measure.endswith("cosine"):
                ax.set_ylim(-0.05, 1.05)
            if measure.endswith("relative_error"):
                ax.set_yscale("log")
            title = measure.replace("_", " ")
            ax.set_title(f"{run}: {title}" if run else title, fontsize=9)
            ax.text(0.02, 0.02, where, transform=ax.transAxes, fontsize=7, color="0.3")
            ax.set_xlabel("step")
            sns.despine(ax=ax)
    fig.tight_layout()
    return fig


def _by_rule(da):
    """Mean of ``da`` over pairs of runs of each pair of rules, a run never with itself —
    except a rule of one run, whose block is that run against itself."""
    from repsim.compare.inference import rule_of, seed_summary

    summary = seed_summary(da)
    mean = summary["mean"].copy()
    for rule in mean["rule"].values:
        if int(summary["pairs"].sel(rule=rule, rule_=rule)) == 0:
            run = next(str(r) for r in da[RUN].values if rule_of(str(r)) == rule)
            own = da.sel({RUN: run, f"{RUN}_": run}).transpose(LAYER, f"{LAYER}_")
            mean.loc[{"rule": rule, "rule_": rule}] = own.values
    return mean


def compare_grid(
    results, slug: str, *, reference: str | None = None, max_rules: int = 5, size: float = 2.3
):
    """Layer × layer heat maps of one measure for each pair of learning rules (seeds
    averaged, a run never paired with itself), the best-matching layer drawn on each, and
    a panel of each rule's similarity to ``reference`` layer by layer, with bootstrap
    bands (``similarity_<slug>_ci``) and the untrained baseline (``_init``) when present.

    Parameters
    ----------
    results
        A Dataset with ``similarity_<slug> (run, layer, run_, layer_)``
        (:func:`repsim.compare.analyse`).
    reference
        A rule or run (default: the first).
    """
    import seaborn as sns

    from repsim.compare.inference import rule_of, seed_summary

    plt = _pyplot()
    sim = results[f"similarity_{slug}"]
    distance = sim.attrs.get("kind") == "distance"
    mean = _by_rule(sim)
    rules = [str(r) for r in mean["rule"].values][:max_rules]
    reference = rule_of(reference) if reference else rules[0]
    k = len(rules)
    fig = plt.figure(figsize=(size * k + 1.2 + 5.0, max(size * k, 3.6)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[size * k + 1.2, 5.0])
    grid = left.add_gridspec(k, k)
    heatmaps = []
    vmin, vmax = (0.0, float(np.nanmax(mean.values)) if distance else 1.0)
    if not distance:
        vmin = min(0.0, float(np.nanmin(mean.values)))
    image = None
    for i, ra in enumerate(rules):
        for j, rb in enumerate(rules):
            ax = left.add_subplot(grid[i, j])
            heatmaps.append(ax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == k - 1:
                ax.set_xlabel(f"{rb} layer", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{ra} layer", fontsize=8)
            block = mean.sel(rule=ra, rule_=rb).transpose(LAYER, f"{LAYER}_").values
            if np.isnan(block).all():
                continue
            image = ax.imshow(
                block, vmin=vmin, vmax=vmax, cmap="magma_r" if distance else "magma", origin="upper"
            )
            filled = np.where(np.isnan(block), np.inf if distance else -np.inf, block)
            best = (np.argmin if distance else np.argmax)(filled, axis=1)
            ax.plot(best, np.arange(len(best)), color="cyan", lw=1, marker=".", ms=2)
    if image is not None:
        left.colorbar(image, ax=heatmaps, shrink=0.8, label=sim.attrs.get("measure", slug))
    ax = right.subplots()
    layers = [str(v) for v in sim[LAYER].values]
    xs = np.arange(1, len(layers) + 1)
    colors = sns.color_palette("colorblind", len(rules))
    same_layer = {LAYER: layers, f"{LAYER}_": layers}
    diag = lambda da: np.array([float(da.sel({LAYER: name, f"{LAYER}_": name})) for name in layers])  # noqa: E731
    ci = results.get(f"similarity_{slug}_ci")
    init = results.get(f"similarity_{slug}_init")
    for color, rule in zip(colors, rules, strict=True):
        alone = not int(seed_summary(sim)["pairs"].sel(rule=rule, rule_=rule))
        if rule == reference and alone:  # the reference with itself only when it has seeds
            continue
        y = diag(mean.sel(rule=rule, rule_=reference).sel(same_layer))
        ax.plot(xs, y, color=color, marker="o", ms=3, label=f"{rule} vs {reference}")
        if ci is not None:
            pairs = [
                (a, b)
                for a in ci[RUN].values
                for b in ci[f"{RUN}_"].values
                if rule_of(str(a)) == rule and rule_of(str(b)) == reference and a != b
            ]
            if pairs:
                lo = np.mean(
                    [diag(ci.sel({RUN: a, f"{RUN}_": b}).isel(quantile=0)) for a, b in pairs], 0
                )
                hi = np.mean(
                    [diag(ci.sel({RUN: a, f"{RUN}_": b}).isel(quantile=1)) for a, b in pairs], 0
                )
                ax.fill_between(xs, lo, hi, color=color, alpha=0.25, lw=0)
    if init is not None:
        base = seed_summary(init)["mean"]  # different untrained networks only
        values = np.array([diag(base.sel(rule=r, rule_=reference)) for r in rules])
        finite = np.isfinite(values)
        if finite.any():  # the mean over the pairs that have one, without empty-slice warnings
            count = finite.sum(0)
            y = np.where(
                count > 0, np.where(finite, values, 0).sum(0) / np.maximum(count, 1), np.nan
            )
            ax.plot(xs, y, color="grey", ls="--", lw=1, label="untrained networks")
    ax.set_xticks(xs, layers, rotation=90, fontsize=7)
    ax.set_xlabel(f"{LAYER} (same layer in both)")
    ax.set_ylabel(sim.attrs.get("measure", slug))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=7)
    sns.despine(ax=ax)
    fig.suptitle(
        f"{sim.attrs.get('measure', slug)}: layer × layer (seeds averaged, "
        "a run with itself only for a rule of one run; cyan: best match)",
        fontsize=10,
    )
    return fig
