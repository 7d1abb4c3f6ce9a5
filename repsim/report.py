"""Every analysis of the paper on a directory of checkpoints, and every figure.

    python -m repsim.report ckpt/

loads each checkpoint once and runs on it :func:`repsim.rdm.analyse` (RDMs, diagonal L2),
:func:`repsim.probes.analyse` (linear classifier and regressor probes),
:func:`repsim.norms.analyse` (normalised weight norms) and :func:`repsim.compare.analyse`
(every layer against every other, unbiased linear CKA by default), all into
``ckpt/results.zarr``; it draws their figures from what that store holds, and the learning curves from each run's
``history.csv``, into ``ckpt/figures/``. Each step reuses the activations that are up to
date. ``--stimuli`` and ``--metric`` are the RDMs' options, ``--train-stimuli``,
``--test-stimuli``, ``--C`` and ``--alpha`` the probes', ``--weights`` the norms',
``--measure``, ``--bootstrap``, ``--permutations`` and ``--reference`` the comparison's.

A run that cannot be analysed (an unreadable checkpoint, NaN weights, a damaged store)
does not stop the others: the report goes on, lists what failed and why at the end, and
exits with status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from repsim import cli, compare, norms, probes, rdm
from repsim.names import RUN
from repsim.runs import Run

__all__ = ["main"]

_STEPS = (rdm.COMMAND, probes.COMMAND, norms.COMMAND, compare.COMMAND)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.report``: see the module docstring."""
    return cli.main(_COMMAND, argv)


def _add_arguments(p) -> None:
    for step in _STEPS:
        step.add_arguments(p)


def _report(runs: list[Run], context: cli.Context) -> int | None:
    from repsim import plots, store

    failures = context.failures
    failed = 0
    for step in _STEPS:
        try:
            step.run(runs, context)
        except cli.ERRORS as err:
            failures.fail(err)
            failures.items.append((f"repsim.{step.name}", "could not run (its error is above)"))
            failed += 1
    checkpoints = {run.name: run.info.path for run in runs if run.info.path.is_dir()}
    histories = store.read_histories(checkpoints, on_error=failures.add)
    if histories.sizes.get(RUN):
        metrics = [m for m in ("train_accuracy", "test_accuracy") if m in histories]
        context.figure(plots.learning_curves(histories, metrics=metrics), "learning_curves")
    if failed == len(_STEPS):
        failures.end("")
        return 2
    print(f"\nall results: {context.store}; figures: {context.store.parent / 'figures'}")
    return None


_COMMAND = cli.Command(
    "report", "Run every analysis and draw every figure.", _report, _add_arguments
)


if __name__ == "__main__":
    sys.exit(main())
