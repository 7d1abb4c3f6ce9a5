"""Add "Which layer matches which" to analyses/REPORT.md: repsim.compare on the paper runs.

    python analyses/compare_report.py --ckpt ckpt-paper [--bootstrap 1000] [--permutations 200]

Compares every layer of every run with every layer of every other (12 runs: 4 rules × 3
seeds) over the paper's 400 test digits with unbiased linear CKA (bootstrap intervals,
permutation p-values, untrained baseline) and RSA (Spearman between RDMs, bootstrap
intervals), stores the results in ``<ckpt>/results.zarr``, draws
``analyses/figures/compare_*.png`` and writes the section between the markers
``<!-- compare:start -->`` and ``<!-- compare:end -->`` of ``REPORT.md`` (which
``make_report.py`` keeps). Every number in it is computed here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch

from repsim import compare, plots, runs, store
from repsim.names import LAYER, RUN

HERE = Path(__file__).resolve().parent
START, END = "<!-- compare:start -->", "<!-- compare:end -->"
RULES = ["bp", "sg-single", "sg-full", "dfa"]


def _layer_number(name: str) -> int:
    return int("".join(c for c in name if c.isdigit()) or 0)


def best_layer_interval(acts, a: list[str], b: list[str], layer: str, n: int, seed: int):
    """For ``layer`` of each run in ``a``, the best-matching layer (number) of the paired run
    in ``b`` on every bootstrap resample of the activations ``acts`` (those runs): the 2.5, 50 and 97.5 percentiles, pooled over the
    pairs."""
    samples = compare.bootstrap(acts, measure="cka", n=n, seed=seed, device="cpu")
    picks = []
    for ra, rb in zip(a, b, strict=True):
        s = samples.sel({RUN: ra, LAYER: layer, f"{RUN}_": rb})
        picks += [
            _layer_number(str(s[f"{LAYER}_"].values[i])) for i in np.nanargmax(s.values, axis=1)
        ]
    return np.percentile(picks, [2.5, 50, 97.5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, default=Path("ckpt-paper"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--rsa-bootstrap", type=int, default=200)
    parser.add_argument(
        "--skip-analyses", action="store_true", help="redraw from <ckpt>/results.zarr as it is"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    results_path = args.ckpt / "results.zarr"
    timing = args.out / "figures" / "compare_numbers.json"
    if args.skip_analyses:
        stored = store.open_results(results_path)
        cka = stored[[v for v in stored.data_vars if "cka_linear" in str(v)]]
        rsa = stored[[v for v in stored.data_vars if "rsa_spearman" in str(v)]]
        meta = json.loads(timing.read_text()) if timing.is_file() else {}
        elapsed = meta.get("analysis_s", float("nan"))
        args.bootstrap = meta.get("bootstrap", args.bootstrap)
        args.permutations = meta.get("permutations", args.permutations)
        args.rsa_bootstrap = meta.get("rsa_bootstrap", args.rsa_bootstrap)
    else:
        nets = runs.discover(args.ckpt)
        common = {"cache": args.ckpt, "device": "cpu", "progress": True}
        cka = compare.analyse(
            nets, measure="cka", bootstrap=args.bootstrap, permutations=args.permutations, **common
        )
        rsa = compare.analyse(
            nets, measure="rsa:spearman", bootstrap=args.rsa_bootstrap, baseline=False, **common
        )
        for ds in (cka, rsa):
            for name in ds.data_vars:
                store.write_result(results_path, ds[name])
        elapsed = time.perf_counter() - t0
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({
            "analysis_s": elapsed, "bootstrap": args.bootstrap,
            "permutations": args.permutations, "rsa_bootstrap": args.rsa_bootstrap,
        }, indent=1) + "\n")  # fmt: skip
    figures = args.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for ds, slug in ((cka, "cka_linear"), (rsa, "rsa_spearman")):
        fig = plots.compare_grid(ds, slug, reference="bp")
        fig.savefig(figures / f"compare_{slug}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    names = [str(r) for r in cka[RUN].values]
    seeds = sorted({n.split("/seed-")[1] for n in names if "/seed-" in n})
    sim = cka["similarity_cka_linear"]
    ci = cka["similarity_cka_linear_ci"]
    init = cka["similarity_cka_linear_init"]
    pvals = cka["similarity_cka_linear_p"]
    best = cka["best_layer_cka_linear"]
    score = cka["best_score_cka_linear"]
    layers = [str(v) for v in sim[LAYER].values]
    first = layers[0]

    # 1. which BP layer does each rule's first (and middle, last) layer match best?
    rows = []
    for rule in RULES[1:]:
        for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
            pairs = [(f"{rule}/seed-{s}", f"bp/seed-{s}") for s in seeds]
            picks = [str(best.sel({RUN: a, LAYER: layer, f"{RUN}_": b}).values) for a, b in pairs]
            cv = [float(score.sel({RUN: a, LAYER: layer, f"{RUN}_": b})) for a, b in pairs]
            rows.append(
                f"| `{rule}` {layer} | {', '.join(picks)} | "
                f"{np.mean(cv):.2f} ({min(cv):.2f}–{max(cv):.2f}) |"
            )
    dfa_a = [f"dfa/seed-{s}" for s in seeds]
    bp_b = [f"bp/seed-{s}" for s in seeds]
    lo, mid, hi = best_layer_interval(
        store.open_activations(args.ckpt / "activations.zarr", runs=dfa_a + bp_b, verify=False),
        dfa_a,
        bp_b,
        first,
        n=min(args.bootstrap, 200),
        seed=1,
    )

    # 2. are two seeds of one rule more alike than two rules? (same layer in both)
    summary = compare.seed_summary(sim)
    same = lambda da: np.array([float(da.sel({LAYER: x, f"{LAYER}_": x})) for x in layers])  # noqa: E731
    within = {r: same(summary["mean"].sel(rule=r, rule_=r)) for r in RULES}
    between = {
        (r, q): same(summary["mean"].sel(rule=r, rule_=q)) for r in RULES for q in RULES if r < q
    }
    base = compare.seed_summary(init)["mean"]
    base_same = np.nanmean([same(base.sel(rule=r, rule_=q)) for r in RULES for q in RULES], 0)
    shown = [0, 4, 9, 14, 19] if len(layers) == 20 else list(range(len(layers)))
    head = "| pair of runs | " + " | ".join(layers[i] for i in shown) + " |"
    table = [head, "|---|" + "---|" * len(shown)]
    for r in RULES:
        table.append(
            f"| two seeds of `{r}` | " + " | ".join(f"{within[r][i]:.2f}" for i in shown) + " |"
        )
    for (r, q), v in between.items():
        table.append(f"| `{r}` vs `{q}` | " + " | ".join(f"{v[i]:.2f}" for i in shown) + " |")
    table.append(
        "| untrained networks | " + " | ".join(f"{base_same[i]:.2f}" for i in shown) + " |"
    )
    more_alike = {
        r: int(
            sum(
                within[r][i] > max(v[i] for (a, q), v in between.items() if r in (a, q))
                for i in range(len(layers))
            )
        )
        for r in RULES
    }

    # bootstrap interval of a same-layer score, for scale
    def ci_of(a: str, b: str, layer: str) -> str:
        c = ci.sel({RUN: a, LAYER: layer, f"{RUN}_": b, f"{LAYER}_": layer}).values
        v = float(sim.sel({RUN: a, LAYER: layer, f"{RUN}_": b, f"{LAYER}_": layer}))
        return f"{v:.2f} [{c[0]:.2f}, {c[1]:.2f}]"

    # 3. does RSA tell the same story as CKA?
    from scipy.stats import spearmanr

    r_sim = rsa["similarity_rsa_spearman"].transpose(*sim.dims)
    other = np.array([[a != b for b in sim[f"{RUN}_"].values] for a in sim[RUN].values])
    pick = np.broadcast_to(other[:, None, :, None], sim.shape)
    agree_r = float(spearmanr(sim.values[pick], r_sim.values[pick]).statistic)

    def numbers(da):
        return np.array([_layer_number(str(v)) for v in da.values.ravel()]).reshape(da.shape)

    b_cka = numbers(best)
    b_rsa = numbers(rsa["best_layer_rsa_spearman"].transpose(*best.dims))
    off = np.broadcast_to(other[:, None, :], best.shape)
    agree_best = float((b_cka == b_rsa)[off].mean())
    agree_near = float((abs(b_cka - b_rsa) <= 1)[off].mean())

    s0 = seeds[0]
    sig = float((pvals.values <= 0.05).mean())
    lines = [
        START,
        "## Which layer matches which (repsim.compare)",
        "",
        "Every layer of every run against every layer of every other run, over the paper's 400 "
        "test digits: unbiased linear CKA (the default; the biased estimator inflates scores at "
        f"n = 400) with {args.bootstrap} bootstrap resamples of the stimuli (percentile 95 % "
        f"intervals), {args.permutations} stimulus permutations for p-values and the same "
        "architecture untrained (each run reset with its own seed) as the baseline; and RSA "
        f"(Spearman between RDMs, {args.rsa_bootstrap} resamples). Generated by "
        f"`analyses/compare_report.py` in {elapsed / 60:.1f} min on 2 CPU cores.",
        "",
        "![CKA layer by layer](figures/compare_cka_linear.png)",
        "",
        "Heat maps: rows are the first rule's layers, columns the second's (seeds averaged, a "
        "run never paired with itself); cyan: the best-matching column for each row. Right: "
        "each rule's layer k against `bp`'s layer k, with the mean bootstrap band over seed "
        "pairs; dashed: untrained networks.",
        "",
        "**Best-matching `bp` layer** (same seed; chosen on one half of the stimuli, scored on "
        "the other, both ways — the cross-validated CKA):",
        "",
        "| layer | best `bp` layer (seeds "
        + ", ".join(seeds)
        + ") | cross-validated CKA, mean (range) |",
        "|---|---|---|",
        *rows,
        "",
        f"DFA's first layer is best matched by `bp`'s layer {int(mid)} (bootstrap 95 % interval "
        f"of the best layer, pooled over seeds: layers {int(lo)}–{int(hi)}).",
        "",
        "**Are two seeds of one rule more alike than two rules?** Same-layer CKA, mean over "
        "pairs of runs (3 seed pairs within a rule, 6 between rules):",
        "",
        *table,
        "",
        "Layers (of "
        + str(len(layers))
        + ") at which two seeds of a rule are more alike than that rule and any other: "
        + ", ".join(f"`{r}` {more_alike[r]}" for r in RULES)
        + f". For scale, bootstrap intervals of single scores (seed {s0}): `bp` vs `dfa` "
        f"{first} {ci_of(f'bp/seed-{s0}', f'dfa/seed-{s0}', first)}, {layers[-1]} "
        f"{ci_of(f'bp/seed-{s0}', f'dfa/seed-{s0}', layers[-1])}; `bp` vs `sg-full` "
        f"{layers[len(layers) // 2]} {ci_of(f'bp/seed-{s0}', f'sg-full/seed-{s0}', layers[len(layers) // 2])}. "
        f"{sig:.0%} of all layer pairs have permutation p ≤ 0.05.",
        "",
        f"RSA (Spearman between the RDMs) against CKA: over every pair of layers of two "
        f"different runs the two scores have Spearman correlation {agree_r:.2f}, and the best-"
        f"matching layer is the same for {agree_best:.0%} of (run, layer, other run) and within "
        f"one layer of it for {agree_near:.0%}:",
        "",
        "![RSA layer by layer](figures/compare_rsa_spearman.png)",
        END,
    ]
    report = args.out / "REPORT.md"
    text = report.read_text() if report.is_file() else ""
    if START in text:
        text = text[: text.index(START)] + text[text.index(END) + len(END) :].lstrip("\n")
    report.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {report} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
