"""Every analysis of the paper on a directory of checkpoints, and every figure.

    python -m repsim.report ckpt/

runs ``repsim.rdm`` (RDMs, diagonal L2), ``repsim.probes`` (linear classifier and
regressor probes), ``repsim.norms`` (normalised weight norms), all into
``ckpt/results.zarr``, and draws their figures and the learning curves from each run's
``history.csv`` into ``ckpt/figures/``. Each step reuses what is up to date.

A run that cannot be analysed (an unreadable checkpoint, NaN weights, a damaged store)
does not stop the others: the report goes on, lists what failed and why at the end, and
exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_PASSED = ("--layers", "--stimuli", "--device", "--batch-size", "--model", "--model-kwargs")
_FLAGS = ("--trust", "--force", "--quiet", "--debug")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.report``: see the module docstring."""
    from repsim import _cli, checkpoints, extract, norms, plots, probes, rdm, store

    p = argparse.ArgumentParser(
        prog="python -m repsim.report", description="Run every analysis and draw every figure."
    )
    extract.add_source_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default: the directory given), or a results store path ending in .zarr; "
        "activations, results.zarr and figures/ go there",
    )
    args = p.parse_args(argv)
    failures = _cli.Failures(p.prog, argv, args.debug)
    try:
        out = _cli.results_path(args)  # refuses an --out that is a file, before any work
    except _cli.ERRORS as err:
        return failures.fail(err)
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
    codes = [step(common, failures=failures) for step in (rdm.main, probes.main, norms.main)]
    for step, code in zip(("repsim.rdm", "repsim.probes", "repsim.norms"), codes, strict=True):
        if code == 2:
            failures.items.append((step, "could not run (its error is above)"))
    path = args.path.expanduser()
    if path.is_dir():
        histories = store.read_histories(dict(checkpoints.discover(path)), on_error=failures.add)
        if histories.sizes.get("run"):
            metrics = [m for m in ("train_accuracy", "test_accuracy") if m in histories]
            fig = plots.learning_curves(histories, metrics=metrics)
            _cli.save_figure(fig, out, "learning_curves")
    if all(code == 2 for code in codes):
        failures.end("")
        return 2
    print(f"\nall results: {out}; figures: {out.parent / 'figures'}")
    return failures.end()


if __name__ == "__main__":
    sys.exit(main())
