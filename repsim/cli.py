"""The command line shared by ``python -m repsim.extract|rdm|probes|norms|report``.

One parser function (:func:`parser`) owns the arguments every command takes: the networks
(a checkpoint directory, a checkpoint, or a weights file with ``--model``), ``--layers``,
``--stimuli``, ``--device``, ``--batch-size``, ``--out``, ``--force``, ``--quiet``,
``--debug``. :func:`main` parses them, loads each network once (:func:`repsim.runs.discover`)
and hands the runs to the command's function, with a :class:`Context` that says where to
write, extracts, stores results, saves figures and records failures.

Exit status: 0 when every run was analysed; 1 when some runs failed (the others are
analysed, and the failures are listed at the end); 2 when the command could not run at all
(bad arguments, nothing to analyse).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from repsim.names import LAYER, RUN
from repsim.runs import NothingAnalysed, Run

__all__ = [
    "ERRORS",
    "Command",
    "Context",
    "Failures",
    "NothingAnalysed",
    "layer_table",
    "main",
    "parser",
    "run",
    "store_path",
]

#: Bad input that a command reports in one line (exit status 2) instead of a traceback.
ERRORS = (ValueError, OSError, TypeError)


class Failures:
    """Runs a command could not analyse, and why: the command goes on with the other runs.

    ``command`` is the command line as given (``--force`` appended to it recomputes a
    damaged store); ``debug`` prints each failure's traceback as well.
    """

    def __init__(self, prog: str, argv: Sequence[str] | None, debug: bool = False) -> None:
        argv = sys.argv[1:] if argv is None else list(argv)
        self.command = f"{prog} {shlex.join(argv)}".strip()
        self.debug = debug
        self.items: list[tuple[str, str]] = []  # (run, reason)

    def message(self, err: BaseException) -> str:
        """One line for ``err``: what went wrong and how to fix it."""
        from repsim.store import DamagedStoreError

        if isinstance(err, DamagedStoreError):
            return f"{err.args[0]}; recompute it: {self.command} --force"
        if isinstance(err, OSError) and err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return (
                f"another process wrote {err.filename or 'the same output'} at the same time "
                f"({err.strerror}); run the command again when it has finished"
            )
        text = str(err) if isinstance(err, ERRORS) else f"{type(err).__name__}: {err}"
        lines = text.strip().splitlines()
        return (
            lines[0] + (" (… --debug shows the rest)" if len(lines) > 1 else "") if lines else text
        )

    def add(self, run: str, err: BaseException) -> None:
        """Record that ``run`` failed with ``err``; the caller goes on with the next run.
        Failures are listed when the command ends (:meth:`end`, :meth:`fail`)."""
        if self.debug:
            traceback.print_exception(err)
        self.items.append((run, self.message(err)))

    def fail(self, err: BaseException) -> int:
        """End a command that could not run at all: one line (a traceback with ``--debug``)."""
        unique = list(dict.fromkeys(self.items))
        if isinstance(err, NothingAnalysed) and len(unique) == 1:
            print(f"error: {unique[0][0]}: {unique[0][1]}", file=sys.stderr)
            return 2
        if self.debug and not isinstance(err, NothingAnalysed):
            traceback.print_exception(err)
        print(f"error: {self.message(err)}", file=sys.stderr)
        self.end("")
        return 2

    def end(self, others: str = "; the other runs were analysed") -> int:
        """List the runs that failed, if any; the exit status (0, or 1 when some failed)."""
        unique = list(dict.fromkeys(self.items))
        if not unique:
            return 0
        print(f"\n{len(unique)} failure(s){others}:", file=sys.stderr)
        for run, reason in unique:
            print(f"  {run}: {reason}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------- arguments


def parser(name: str, description: str, *, stimuli: bool = True) -> argparse.ArgumentParser:
    """``python -m repsim.<name>``'s parser with the arguments every command shares.

    ``stimuli=False`` leaves out ``--stimuli`` (for a command whose stimuli are chosen by
    its own options, such as the probes' ``--train-stimuli``/``--test-stimuli``).
    """
    p = argparse.ArgumentParser(prog=f"python -m repsim.{name}", description=description)
    p.add_argument(
        "path",
        type=Path,
        help="a directory of checkpoints (searched recursively), one checkpoint, or a weights file",
    )
    p.add_argument(
        "--layers", help="comma-separated module names (default: the checkpoint's layers)"
    )
    if stimuli:
        p.add_argument(
            "--stimuli",
            help="<dataset>:<split>:<n|all> (default: the paper's 400 test points of the run's dataset, <dataset>:test:400)",
        )
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--model", help="package.module:callable that builds the network (external weights)"
    )
    p.add_argument(
        "--model-kwargs", type=json.loads, help="JSON object of keyword arguments for --model"
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="let checkpoint.json name any callable as its model factory, not only a model class (runs its code)",
    )
    p.add_argument(
        "--max-model-gb",
        type=float,
        help="refuse models whose parameters and buffers exceed this size (default: 4)",
    )
    p.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="load weights even if some keys are missing or unexpected",
    )
    p.add_argument("--force", action="store_true", help="recompute runs that are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the traceback of each error")
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default: the directory given), or a results store path ending in .zarr; "
        "activations, results.zarr and figures/ go there",
    )
    return p


def _max_bytes(gb: float | None) -> int | None:
    if gb is None:
        return None
    if not gb > 0:
        raise ValueError(f"--max-model-gb must be a positive number, got {gb}")
    return int(gb * 2**30)


def load_runs(args: argparse.Namespace, failures: Failures) -> list[Run]:
    """Every network named by the arguments, each loaded once; failures are recorded."""
    from repsim import runs

    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    return runs.discover(
        args.path,
        model=args.model,
        model_kwargs=args.model_kwargs,
        layers=layers,
        trust=args.trust,
        strict=args.strict,
        max_model_bytes=_max_bytes(args.max_model_gb),
        on_error=failures.add,
    )


def out_dir(args: argparse.Namespace) -> Path:
    """Where a command writes: ``--out`` (a directory, or a ``.zarr`` store, whose directory
    is then used), else the checkpoint directory given (or the weights file's). Activations,
    results and figures all go there, so that read-only checkpoints can be analysed with
    ``--out``.

    An ``--out`` that names an existing file is refused before any work.
    """
    if args.out is None:
        path = args.path.expanduser()
        return path.parent if path.is_file() else path
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {out} is an existing file; name a directory (or a .zarr store path) for the output"
        )
    return out.parent if out.suffix == ".zarr" else out


def store_path(args: argparse.Namespace, default: str) -> Path:
    """``--out`` when it names a ``.zarr`` store, else ``default`` in :func:`out_dir`."""
    base = out_dir(args)
    return (
        args.out.expanduser()
        if args.out is not None and args.out.suffix == ".zarr"
        else base / default
    )


# ------------------------------------------------------------------- running


@dataclasses.dataclass
class Context:
    """What a command's function gets besides the runs: its arguments, where it writes,
    and the failures of its runs."""

    args: argparse.Namespace
    failures: Failures
    #: The store the command writes: ``results.zarr`` (``activations.zarr`` for
    #: ``repsim.extract``), or ``--out`` when it names a ``.zarr`` store.
    store: Path
    #: A ``dask.distributed.Client``: :meth:`map` then runs each run's part as a task.
    client: Any = None
    #: Run name → its network, sent once to the cluster (:func:`repsim.cluster.map_runs`).
    _remote: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def base(self) -> Path:
        """The output directory: activations stores and ``figures/`` go there."""
        return out_dir(self.args)

    def extraction(self) -> dict[str, Any]:
        """Keywords of :func:`repsim.extract.extract_runs` from the arguments: how to
        extract, and where failures and the one line per run go."""
        return {
            "batch_size": self.args.batch_size,
            "force": self.args.force,
            "progress": not self.args.quiet,
            "on_error": self.failures.add,
            "log": print,
        }

    def analysis(self) -> dict[str, Any]:
        """Keywords of every runs-level ``analyse`` (:mod:`repsim.runs`) from the arguments:
        ``device``, the output directory as ``cache``, and :meth:`extraction`'s."""
        return {"device": self.args.device, "cache": self.base, **self.extraction()}

    def map(self, analyse: Callable[..., Any], runs: list[Run], **options: Any) -> Any:
        """``analyse(runs, **options)``, a runs-level analysis (:mod:`repsim.runs`): here, or
        with each run's part a task on :attr:`client`'s cluster (the same Dataset)."""
        if self.client is None:
            return analyse(runs, **options)
        from repsim import cluster

        return cluster.map_runs(self.client, analyse, runs, scattered=self._remote, **options)

    def save(self, results: Any) -> Any:
        """Write each variable of ``results`` to the results store and read them back:
        the figures and tables are drawn from what the store holds."""
        from repsim.store import open_results, write_result

        for name in results.data_vars:
            write_result(self.store, results[name])
        stored = open_results(self.store)
        runs = [str(r) for r in results[RUN].values]
        out = stored[list(results.data_vars)].sel({RUN: runs})
        return out.dropna(LAYER, how="all") if LAYER in out.dims else out

    def summary(
        self,
        title: str,
        results: Any,
        table: Any,
        cell: Callable[[str, int], str],
        figures: Sequence[Path],
        width: int = 10,
    ) -> None:
        """Print the runs × layers ``table`` (a DataArray of ``results``, :func:`layer_table`)
        and where ``results`` and the figures were written."""
        runs = [str(r) for r in table[RUN].values]
        layer_table(title, runs, [str(v) for v in table[LAYER].values], cell, width)
        written = ", ".join(results.data_vars)
        print(f"\n→ {self.store} ({written}), {', '.join(map(str, figures))}")

    def figure(self, fig: Any, name: str) -> Path:
        """Save ``fig`` as ``figures/<name>.png`` beside the results store, and free it."""
        import matplotlib.pyplot as plt

        figures = self.store.parent / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        path = figures / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path


@dataclasses.dataclass(frozen=True)
class Command:
    """A ``python -m repsim.<name>`` command: its own arguments, and what it does with the
    runs: ``run(runs, context)`` raises one of :data:`ERRORS` when it cannot run, and may
    return an exit status in place of the usual one (0, or 1 when some runs failed)."""

    name: str
    description: str
    run: Callable[[list[Run], Context], int | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
    stimuli: bool = True

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python -m repsim.<name>``: parse ``argv``, load the runs once and run this
        command on them; the exit status (:func:`main`)."""
        return main(self, argv)


def main(
    command: Command, argv: Sequence[str] | None = None, *, store: str = "results.zarr"
) -> int:
    """Parse ``argv``, load the runs once, and run ``command`` on them; the exit status."""
    import matplotlib

    matplotlib.use("Agg")  # commands write files; they never open windows
    p = parser(command.name, command.description, stimuli=command.stimuli)
    command.add_arguments(p)
    args = p.parse_args(argv)
    failures = Failures(p.prog, argv, args.debug)
    try:
        return run(command, args, failures, store=store)
    except ERRORS as err:
        return failures.fail(err)


def run(
    command: Command,
    args: argparse.Namespace,
    failures: Failures,
    *,
    store: str = "results.zarr",
    client: Any = None,
) -> int:
    """Load the runs ``args`` names once and run ``command`` on them (on ``client``'s Dask
    cluster when given); the exit status. A command that cannot run at all raises one of
    :data:`ERRORS`."""
    context = Context(
        args, failures, store_path(args, store), client
    )  # refuses --out naming a file
    runs = load_runs(args, failures)
    if not runs:
        raise NothingAnalysed(f"no run could be analysed ({len(failures.items)} failed)")
    code = command.run(runs, context)
    return failures.end() if code is None else code


def layer_table(
    title: str,
    runs: Sequence[str],
    layers: Sequence[str],
    cell: Callable[[str, int], str],
    width: int = 10,
) -> None:
    """Print a runs × (a few layers) table; ``cell(run, layer position)`` formats one entry."""
    shown = sorted({0, len(layers) // 4, len(layers) // 2, 3 * len(layers) // 4, len(layers) - 1})
    print(f"\n{title}")
    print(f"{'run':<14}" + "".join(f"{layers[i]:>{width}}" for i in shown))
    for run in runs:
        print(f"{run!s:<14}" + "".join(f"{cell(run, i):>{width}}" for i in shown))
