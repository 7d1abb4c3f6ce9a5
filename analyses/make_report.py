"""Write analyses/REPORT.md: the paper preset's results on mnist-5k and the paper's claims.

    python -m training.sweep --preset paper --seeds 0,1,2 --out ckpt-paper   # ~10 min, 2 CPU cores
    python analyses/make_report.py --ckpt ckpt-paper

Runs every analysis (``repsim.report``) on the checkpoints, draws the report's figures into
``analyses/figures/`` (small PNGs, also shown in the README) and writes ``analyses/REPORT.md``:
final accuracies, and for each claim of the paper's Section 5 / Supplementary C the measured
number (mean ± sd over seeds) and whether it holds. Nothing in the report is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import xarray as xr

from repsim import checkpoints, plots, report, store

HERE = Path(__file__).resolve().parent
ORDER = ["bp", "sg-single", "sg-full", "dfa"]


def _method(run: str) -> str:
    return run.split("/")[0]


def _group(da: xr.DataArray, how: str = "mean") -> xr.DataArray:
    """One row per method (mean or std over seeds), in the paper's order."""
    da = da.assign_coords(method=("run", [_method(str(r)) for r in da["run"].values]))
    grouped = getattr(da.groupby("method"), how)()
    present = [m for m in ORDER if m in grouped["method"].values]
    return _take(grouped.rename(method="run"), present)


def _take(da: xr.DataArray, runs: list[str]) -> xr.DataArray:
    """``da`` at ``runs``, in that order (by position: label lookups may keep index order)."""
    have = [str(r) for r in da["run"].values]
    return da.isel(run=[have.index(r) for r in runs])


def _pm(mean: float, sd: float, fmt: str = ".3f") -> str:
    return f"{mean:{fmt}} ± {sd:{fmt}}" if np.isfinite(sd) and sd > 0 else f"{mean:{fmt}}"


def _settled(d: np.ndarray, fraction: float = 0.1) -> int:
    """1-based layer from which the diagonal L2 stays within ``fraction`` of layer 1's."""
    return next(i for i in range(len(d)) if np.all(d[i:] <= fraction * d[0])) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, default=Path("ckpt-paper"))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    runs = dict(checkpoints.discover(args.ckpt))
    metas = {r: checkpoints.read_meta(p) for r, p in runs.items()}
    t0 = time.perf_counter()
    if report.main([str(args.ckpt), "--quiet"]):
        raise SystemExit("repsim.report failed")
    analysis_s = time.perf_counter() - t0
    res = store.open_results(args.ckpt / "results.zarr").load()
    history = store.read_histories(runs)
    figures = args.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r.split("/seed-")[-1] for r in runs if "/seed-" in r}) or ["0"]
    first = [
        next(r for r in runs if _method(r) == m)
        for m in ORDER
        if any(_method(r) == m for r in runs)
    ]
    marks = {
        _method(r): [metas[r]["layers"][k - 1] for k in metas[r]["method"].get("sg_layers") or []]
        for r in first
    }

    def save(fig, name, dpi=72):
        fig.savefig(figures / f"{name}.png", dpi=dpi, bbox_inches="tight")
        matplotlib.pyplot.close(fig)
        return f"figures/{name}.png"

    figs = {
        "rdm": save(
            plots.rdm_grid(_take(res["rdm"], first).assign_coords(run=[_method(r) for r in first])),
            "rdm",
            dpi=48,
        ),
        "diag_l2": save(plots.diag_l2_curves(_group(res["diag_l2"]), marks=marks), "diag_l2"),
        "probes": save(
            plots.probe_curves(
                _group(res["probe_accuracy"]), _group(res["probe_mse"]), marks=marks
            ),
            "probes",
        ),
        "weight_norm": save(
            plots.weight_norm_curves(_group(res["weight_norm"]), marks=marks), "weight_norm"
        ),
        "learning": save(
            plots.learning_curves(_group(history[["train_accuracy", "test_accuracy"]])),
            "learning_curves",
        ),
    }

    final = history.isel(epoch=-1)
    acc_mean, acc_sd = _group(final["train_accuracy"]), _group(final["train_accuracy"], "std")
    test_mean, test_sd = _group(final["test_accuracy"]), _group(final["test_accuracy"], "std")
    methods = [str(m) for m in acc_mean["run"].values]
    claims = []

    fit = {m: float(acc_mean.sel(run=m)) for m in methods}
    claims.append(
        (
            "All four learning rules fit the training set (Section 5: the networks reach similar, near-perfect training accuracy).",
            ", ".join(f"{m} {_pm(fit[m], float(acc_sd.sel(run=m)))}" for m in methods),
            all(v >= 0.99 for v in fit.values()),
            "a rule whose run does not train makes its other claims below uninformative",
        )
    )
    dl2 = res["diag_l2"]
    settle = {
        m: [_settled(dl2.sel(run=r).values) for r in runs if _method(r) == m] for m in methods
    }
    rdms = res["rdm"]
    step = np.sqrt(((rdms - rdms.shift(layer=1)) ** 2).sum(["stimulus", "stimulus_"]))
    rel = (step / np.sqrt((rdms.shift(layer=1) ** 2).sum(["stimulus", "stimulus_"]))).values
    names = [str(v) for v in rdms["run"].values]
    # the RDM's layer-to-layer change after layer 9 over the change up to layer 9
    late = {
        m: [
            float(np.mean(rel[k, 9:]) / np.mean(rel[k, 1:9]))
            for k, r in enumerate(names)
            if _method(r) == m
        ]
        for m in methods
    }
    claims.append(
        (
            "BP's RDM is nearly constant after about layer 9 (Figures 3 and 7).",
            "mean relative change of the RDM from one layer to the next (Frobenius) in layers "
            "10–20 over that in layers 2–9: "
            + ", ".join(
                f"{m} {_pm(float(np.mean(v)), float(np.std(v)), '.2f')}" for m, v in late.items()
            )
            + "; first layer from which the diagonal L2 to the last layer stays within 10 % of layer 1's: "
            + ", ".join(
                f"{m} {_pm(float(np.mean(v)), float(np.std(v)), '.1f')}" for m, v in settle.items()
            ),
            bool(np.mean(late.get("bp", [np.nan])) < 0.5),
            "holds when BP's ratio is below 0.5: its RDM changes less than half as fast after layer 9",
        )
    )
    probe1 = _group(res["probe_accuracy"].sel(split="test").isel(layer=0))
    probe1_sd = _group(res["probe_accuracy"].sel(split="test").isel(layer=0), "std")
    best = str(probe1["run"].values[int(probe1.argmax(dim="run"))])
    claims.append(
        (
            "DFA's first-layer probe reaches the highest accuracy (Figure 8).",
            "held-out accuracy of the layer-1 classifier probe: "
            + ", ".join(
                f"{m} {_pm(float(probe1.sel(run=m)), float(probe1_sd.sel(run=m)))}" for m in methods
            ),
            best == "dfa",
            f"highest: {best}",
        )
    )
    norms = _group(res["weight_norm"])
    slope = {
        m: float(np.polyfit(np.arange(norms.sizes["layer"]), norms.sel(run=m).values, 1)[0])
        for m in methods
    }
    claims.append(
        (
            "Full-SG weight norms decrease with depth while BP's increase (Figure 5).",
            "least-squares slope of the normalised weight norm per layer: "
            + ", ".join(f"{m} {slope[m]:+.5f}" for m in methods),
            slope.get("sg-full", 0) < 0 < slope.get("bp", 0),
            "",
        )
    )
    mse = _group(res["probe_mse"].sel(split="test"))
    claims.append(
        (
            "Information about the input decays with depth: the regressor probe's error grows from the first to the last layer (Figure 8).",
            "held-out MSE, first → last layer: "
            + ", ".join(
                f"{m} {float(mse.sel(run=m).isel(layer=0)):.4f} → {float(mse.sel(run=m).isel(layer=-1)):.4f}"
                for m in methods
            ),
            all(
                float(mse.sel(run=m).isel(layer=-1)) > float(mse.sel(run=m).isel(layer=0))
                for m in methods
            ),
            "",
        )
    )

    wall = sum(float(m.get("wall_time_s") or 0) for m in metas.values())
    cfg = metas[first[0]]["config"]
    lines = [
        "# Report: the paper preset on mnist-5k",
        "",
        f"Generated by `python analyses/make_report.py --ckpt {args.ckpt}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.processor() or platform.machine()}, torch {metas[first[0]]['versions']['torch']}, device {metas[first[0]]['device']}).",
        "",
        f"- **Training**: `python -m training.sweep --preset paper --seeds {','.join(seeds)} --out {args.ckpt}` — "
        f"{len(runs)} runs ({', '.join(methods)} × seeds {', '.join(seeds)}), {cfg['depth']} × {cfg['width']} "
        f"{cfg['activation']} + BatchNorm, Adam lr {cfg['lr']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
        f"weight decay {cfg['weight_decay']}, data {cfg['data']}; training wall time {wall / 60:.1f} min "
        "(sum of the runs' `wall_time_s`, run one after the other).",
        f"- **Analyses**: `python -m repsim.report {args.ckpt}` (extraction, RDMs over the paper's 400 test digits, "
        f"probes fitted on the 4,000 training digits and tested on the 1,000 held out, weight norms): {analysis_s:.0f} s.",
        "",
        "## Final accuracy (mean ± sd over seeds)",
        "",
        "| run | train | test |",
        "|---|---|---|",
        *[
            f"| {m} | {_pm(fit[m], float(acc_sd.sel(run=m)))} | {_pm(float(test_mean.sel(run=m)), float(test_sd.sel(run=m)))} |"
            for m in methods
        ],
        "",
        "## The paper's claims, measured",
        "",
        *(
            [
                f"Not trained in this run (train accuracy < 0.9): {', '.join(failed)}. The claims "
                "that involve it compare against a network that did not learn the task; see "
                "the README's Training section for what is known about this failure.",
                "",
            ]
            if (failed := [m for m in methods if fit[m] < 0.9])
            else []
        ),
        "| claim | measured | holds? |",
        "|---|---|---|",
        *[
            f"| {c} | {m} | {'yes' if ok else 'no'}{' (' + note + ')' if note else ''} |"
            for c, m, ok, note in claims
        ],
        "",
        "## Figures",
        "",
        f"RDMs (first seed; rows = runs, columns = layers; class blocks outlined):\n\n![RDMs]({figs['rdm']})",
        "",
        f"Diagonal-block L2 distance to the last layer (mean over seeds; dotted: SG positions):\n\n![diag L2]({figs['diag_l2']})",
        "",
        f"Linear probes (held-out solid, train dashed; mean over seeds):\n\n![probes]({figs['probes']})",
        "",
        f"Normalised weight norms:\n\n![weight norms]({figs['weight_norm']})",
        "",
        f"Learning curves:\n\n![learning curves]({figs['learning']})",
        "",
    ]
    (args.out / "REPORT.md").write_text("\n".join(lines))
    (args.out / "figures" / "numbers.json").write_text(json.dumps({
        "final_train_accuracy": fit, "rdm_change_after_9_over_before": late, "diag_l2_settles_at": settle, "layer1_probe": {m: float(probe1.sel(run=m)) for m in methods},
        "weight_norm_slope": slope}, indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.out / 'REPORT.md'}")


if __name__ == "__main__":
    main()
