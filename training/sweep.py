"""Train the paper's four runs with one shared configuration.

    python -m training.sweep --preset paper --out ckpt/
    python -m training.sweep --preset quick --out ckpt/ --methods bp,dfa --seeds 0,1,2

The four runs of Czarnecki et al. (2017), Section 5: ``bp``; ``sg-single``, one synthetic
gradient after the middle block (block 11 of 20); ``sg-full``, a synthetic gradient after
every block; and ``dfa``. They share the preset's network, data, optimiser and seeds.
Each run goes to ``<out>/<run>`` (``<out>/<run>/seed-<k>`` with several seeds); a finished
run is skipped and an interrupted one resumes, so rerunning the command is always safe.
Any TrainConfig flag (``--epochs 5``, ``--data mnist``, ...) overrides the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from repsim import datasets
from repsim.checkpoints import check_destination, read_history
from training.config import TrainConfig, add_config_arguments
from training.train import run

#: The paper's setting (Czarnecki et al. 2017, Supplementary C): "feed forward networks with
#: h layers of 512 hidden relu units followed by batch normalisation layers. The final layer
#: is a regular 10-class softmax layer. Inputs were scaled to [0, 1] interval, besides that
#: there was no preprocessing applied"; "the Adam optimiser with a learning rate of 3e-5.
#: This applies to both main model and to SG module"; h = 20 for the RDMs (Figure 7) and
#: weight norms (Figure 5); MNIST, 60,000 / 10,000.
#:
#: Choices the paper leaves open, made here:
#:
#: - batch size 128 (not stated);
#: - number of steps (not stated; its Supplementary C mentions runs of "100k iterations"
#:   only for the SG-without-activations experiment): 20 epochs (9,360 steps). ``bp``
#:   passes 99.5 % training accuracy on all 60,000 digits at epoch 9, 10 and 9 (seeds 0, 1,
#:   2; measured on the REPORT's runs), so 20 leaves a 2× margin;
#: - ``sg-full`` (an SG after each of the 20 blocks) trains for 60 epochs (28,080 steps), the
#:   preset's only per-run setting (:data:`RUN_OVERRIDES`); the ``sg`` rule itself is Table
#:   1's. A bootstrapped chain of 20 SGs learns more slowly than the other rules: 97.2 %
#:   training accuracy after 20 epochs, 98.6 % after 60 (seed 0; mean of 3 seeds 98.62 %),
#:   still rising by about 0.1 point every 5 epochs. Its test accuracy (97.3 %) is above
#:   ``bp``'s (96.7 %) from epoch 20 on. It does not reach 99 % training accuracy in 60
#:   epochs: see analyses/REPORT.md;
#: - weight decay 1e-4 as an L2 term on the Linear weights (the paper: "a small L2 penalty
#:   added to weights to make norm correspond roughly to amount of computation", size not
#:   stated);
#: - initialisation: PyTorch's default for Linear layers (not stated);
#: - the last incomplete batch of each epoch is dropped (drawn afresh each epoch);
#: - synthetic-gradient quality is measured every 100 steps (``sg_quality_every``; changes
#:   nothing in training).
PAPER = TrainConfig(
    depth=20,
    width=512,
    activation="relu",
    batchnorm=True,
    data="mnist",
    epochs=20,
    batch_size=128,
    lr=3e-5,
    weight_decay=1e-4,
    sg_quality_every=100,
)

PRESETS: dict[str, TrainConfig] = {
    "paper": PAPER,
    # The paper's network and optimiser on the embedded 5,000-digit subset (4,000 to train),
    # for machines without full MNIST: 31 steps an epoch, so more epochs for the same
    # training accuracy. Measured on seed 0 (2 CPU cores): bp passes 99.5 % at epoch 23 (test
    # accuracy only 75-83 %: 4,000 digits at this small step generalise poorly), so 60 epochs
    # leave the paper preset's margin; sg-full passes 99 % at epoch 136 and 99.5 % at 151 and
    # ends at 99.98 % / 92.7 % test after 180 (7.3 min).
    "paper-5k": dataclasses.replace(PAPER, data="mnist-5k", epochs=60, sg_quality_every=31),
    # The same four runs on a small net and a larger step: under 2 minutes for all four
    # on 2 CPU cores; for the demo and the tests, not for conclusions.
    "quick": TrainConfig(depth=8, width=128, epochs=20, batch_size=128, lr=1e-3),
}
RUNS: dict[str, dict[str, str]] = {
    "bp": {"method": "bp"},
    "sg-single": {"method": "sg", "sg_layers": "middle"},
    "sg-full": {"method": "sg", "sg_layers": "all"},
    "dfa": {"method": "dfa"},
}
#: Settings a preset gives one run on top of its own (explicit, and printed by the sweep).
RUN_OVERRIDES: dict[str, dict[str, dict]] = {
    "paper": {"sg-full": {"epochs": 60}},
    "paper-5k": {"sg-full": {"epochs": 180}},
}


def configs(
    preset: str, runs: Sequence[str], seeds: Sequence[int], **overrides
) -> dict[str, TrainConfig]:
    """Run name (relative path under the output directory) → configuration."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if unknown := [r for r in runs if r not in RUNS]:
        raise ValueError(f"unknown run {unknown[0]!r}: expected some of {', '.join(RUNS)}")
    if not runs or not seeds:
        raise ValueError("give at least one run (--methods) and one seed (--seeds)")
    out = {}
    for label in runs:
        for seed in seeds:
            name = label if len(seeds) == 1 else f"{label}/seed-{seed}"
            extra = RUN_OVERRIDES.get(preset, {}).get(label, {})
            settings = {**extra, **overrides, **RUNS[label], "seed": seed}
            out[name] = dataclasses.replace(PRESETS[preset], **settings)
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.sweep",
        description="Train bp, sg-single, sg-full and dfa with one shared configuration.",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--out", type=Path, default=Path("ckpt"), help="default: ckpt")
    parser.add_argument(
        "--methods", default=",".join(RUNS), help=f"runs, default: {','.join(RUNS)}"
    )
    parser.add_argument("--seeds", type=_ints, default=[0], help="default: 0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true")
    add_config_arguments(parser, None, exclude=("method", "sg_layers", "seed"))
    args = parser.parse_args(argv)
    own = {"preset", "out", "methods", "seeds", "device", "quiet"}
    overrides = {k: v for k, v in vars(args).items() if k not in own}
    try:
        plan = configs(args.preset, args.methods.split(","), args.seeds, **overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # a missing dataset is found now, not after the first runs have trained
        for data in dict.fromkeys(cfg.data for cfg in plan.values()):
            for split in ("train", "test"):
                datasets.find(data, split)
    except datasets.DatasetNotFoundError as err:
        print(f"error: preset {args.preset!r} needs {err}", file=sys.stderr)
        return 2
    try:  # every output directory, before the first run trains
        for name in plan:
            check_destination(args.out / name)
    except (ValueError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for name, cfg in plan.items():
        history = run(cfg, args.out / name, device=args.device, progress=not args.quiet)
        if isinstance(history, int):
            return history
        last = history[-1]
        rows.append((name, last))
        print(
            f"{args.out / name}: train {last['train_accuracy']:.4f}  test {last['test_accuracy']:.4f}",
            file=sys.stderr,
        )
    print(f"\n{'run':18s} {'epochs':>6s} {'train acc':>9s} {'test acc':>9s} {'train time':>10s}")
    for name, last in rows:
        trained = sum(float(r["time_s"]) for r in read_history(args.out / name))
        print(
            f"{name:18s} {last['epoch']:6d} {last['train_accuracy']:9.4f} "
            f"{last['test_accuracy']:9.4f} {trained:9.1f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
