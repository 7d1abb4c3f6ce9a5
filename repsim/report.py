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

On a Dask cluster (:mod:`repsim.cluster`), ``--workers N`` (N processes on this machine) or
``--scheduler ADDRESS``, each run's extraction and analyses are tasks on the workers, which
read and write the activations stores there (the output directory must be on storage they
share); the results are gathered into the same ``results.zarr``, with the same numbers. The
comparison across runs, the figures and the tables are made here. From Python,
:func:`report` does the same with a ``dask.distributed.Client`` you hold.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repsim import cli, cluster, compare, norms, probes, rdm
from repsim.names import RUN
from repsim.runs import Run

__all__ = ["main", "report"]

_STEPS = (rdm.COMMAND, probes.COMMAND, norms.COMMAND, compare.COMMAND)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.report``: see the module docstring."""
    return cli.main(_COMMAND, argv)


def report(path: str | os.PathLike, *, client: Any = None, **options: Any):
    """Every analysis on the checkpoints under ``path`` into ``results.zarr``, every figure,
    as ``python -m repsim.report`` makes them; the results, opened (lazily).

    Parameters
    ----------
    client
        A ``dask.distributed.Client``: each run's extraction and analyses are then tasks on
        its cluster, whose workers must share the output directory. (The options
        ``workers=N`` and ``scheduler=ADDRESS`` make one for the report's duration.)
    options
        The command's options by their Python names: ``out``, ``stimuli``, ``device``,
        ``quiet``, ``force``, ``measure``, ... (``python -m repsim.report --help``).

    Raises
    ------
    TypeError
        An option the command does not have.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> results = report("/shared/ckpt", client=Client("tcp://host:8786"), quiet=True)  # doctest: +SKIP
    >>> results.diag_l2.sel(run="bp")  # doctest: +SKIP
    """
    from repsim.store import open_results

    p = cli.parser(_COMMAND.name, _COMMAND.description)
    _add_arguments(p)
    args = p.parse_args([os.fspath(path)])
    known = set(vars(args)) - {"path"}
    for key, value in options.items():
        if key not in known:
            raise TypeError(
                f"report() got an unknown option {key!r}; the options are {', '.join(sorted(known))}"
            )
        setattr(args, key, value)
    if args.out is not None:
        args.out = Path(args.out)
    failures = cli.Failures(p.prog, [os.fspath(path)], args.debug)
    if cli.run(_COMMAND, args, failures, client=client) == 2:
        raise RuntimeError(f"no step of {p.prog} could run (the errors are above)")
    return open_results(cli.store_path(args, "results.zarr"))


def _add_arguments(p) -> None:
    for step in _STEPS:
        step.add_arguments(p)
    cluster.add_arguments(p)


def _report(runs: list[Run], context: cli.Context) -> int | None:
    args = context.args
    if context.client is not None or not (args.scheduler or args.workers):
        return _run_steps(runs, context)
    try:
        with cluster.connect(args.scheduler, args.workers) as client:
            context.client = client
            return _run_steps(runs, context)
    except ImportError as err:  # no distributed: one line that says what to install
        return context.failures.fail(err)
    finally:
        context.client = None


def _run_steps(runs: list[Run], context: cli.Context) -> int | None:
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
