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

from repsim.checkpoints import check_destination, read_history
from training.train import TrainConfig, add_config_arguments, run

PRESETS: dict[str, TrainConfig] = {
    # The paper's net: 20 blocks of 512 ReLU units with batch norm, on the embedded data.
    "paper": TrainConfig(depth=20, width=512, epochs=30, batch_size=128, lr=3e-4),
    # The same four runs on a small net: under 2 minutes for all four on 2 CPU cores.
    "quick": TrainConfig(depth=8, width=128, epochs=20, batch_size=128, lr=1e-3),
}
RUNS: dict[str, dict[str, str]] = {
    "bp": {"method": "bp"},
    "sg-single": {"method": "sg", "sg_layers": "middle"},
    "sg-full": {"method": "sg", "sg_layers": "all"},
    "dfa": {"method": "dfa"},
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
            out[name] = dataclasses.replace(PRESETS[preset], **overrides, **RUNS[label], seed=seed)
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
        print(f"{args.out / name}: train {last['train_accuracy']:.4f}  test {last['test_accuracy']:.4f}",
              file=sys.stderr)  # fmt: skip
    print(f"\n{'run':18s} {'epochs':>6s} {'train acc':>9s} {'test acc':>9s} {'train time':>10s}")
    for name, last in rows:
        trained = sum(float(r["time_s"]) for r in read_history(args.out / name))
        print(f"{name:18s} {last['epoch']:6d} {last['train_accuracy']:9.4f} "
              f"{last['test_accuracy']:9.4f} {trained:9.1f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
