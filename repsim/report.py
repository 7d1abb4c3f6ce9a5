"""Every analysis of the paper on a directory of checkpoints, and every figure.

    python -m repsim.report ckpt/

runs ``repsim.rdm`` (RDMs, diagonal L2), ``repsim.probes`` (linear classifier and
regressor probes), ``repsim.norms`` (normalised weight norms), all into
``ckpt/results.zarr``, and draws their figures and the learning curves from each run's
``history.csv`` into ``ckpt/figures/``. Each step reuses what is up to date.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_PASSED = ("--layers", "--stimuli", "--device", "--batch-size", "--model", "--model-kwargs")
_FLAGS = ("--trust", "--force", "--quiet")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.report``: see the module docstring."""
    from repsim import checkpoints, extract, norms, plots, probes, rdm, store

    p = argparse.ArgumentParser(
        prog="python -m repsim.report", description="Run every analysis and draw every figure."
    )
    extract.add_source_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        help="results store (default: results.zarr in the directory given); figures go to figures/ beside it",
    )
    args = p.parse_args(argv)
    common = [str(args.path)]
    for flag in _PASSED:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            common += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    common += [flag for flag in _FLAGS if getattr(args, flag[2:])]
    if not args.strict:
        common.append("--no-strict")
    if args.out is not None:
        common += ["--out", str(args.out)]
    for step in (rdm.main, probes.main, norms.main):
        code = step(common)
        if code:
            return code
    path = args.path.expanduser()
    out = args.out or extract.output_dir(path) / "results.zarr"
    if path.is_dir():
        histories = store.read_histories(dict(checkpoints.discover(path)))
        if histories.sizes.get("run"):
            metrics = [m for m in ("train_accuracy", "test_accuracy") if m in histories]
            fig = plots.learning_curves(histories, metrics=metrics)
            fig.savefig(
                out.parent / "figures" / "learning_curves.png", dpi=120, bbox_inches="tight"
            )
    print(f"\nall results: {out}; figures: {out.parent / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
