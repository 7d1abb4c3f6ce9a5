"""What the analysis commands share: their arguments, where they write, figures, the
summary table and how errors end them.

Exit status: 0 when every run was analysed; 1 when some runs failed (the others are
analysed, and the failures are listed at the end); 2 when the command could not run at all
(bad arguments, nothing to analyse).
"""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

#: Bad input that a command reports in one line (exit status 2) instead of a traceback.
ERRORS = (ValueError, OSError, TypeError)


class NothingAnalysed(ValueError):
    """Every run of a command failed (each is in the command's :class:`Failures`)."""


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


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """``python -m repsim.<name>``'s parser: the networks, layers, stimuli, and ``--out``."""
    import matplotlib

    from repsim import extract

    matplotlib.use("Agg")  # commands write files; they never open windows
    p = argparse.ArgumentParser(prog=f"python -m repsim.{name}", description=description)
    extract.add_source_arguments(p)
    p.add_argument(
        "--out", type=Path,
        help="output directory (default: the directory given), or a results store path ending in .zarr; "
        "activations, results.zarr and figures/ go there",
    )  # fmt: skip
    return p


def out_dir(args: argparse.Namespace) -> Path:
    """Where a command writes: ``--out`` (a directory, or the ``.zarr`` results store, whose
    directory is then used), else the checkpoint directory given. Activations, results and
    figures all go there, so that read-only checkpoints can be analysed with ``--out``.

    An ``--out`` that names an existing file is refused before any work.
    """
    from repsim import extract

    out = getattr(args, "out", None)
    if out is None:
        return extract.output_dir(args.path.expanduser())
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {out} is an existing file; name a directory (or a .zarr store path) for the output"
        )
    return out.parent if out.suffix == ".zarr" else out


def results_path(args: argparse.Namespace) -> Path:
    """The results store: ``--out`` when it names a ``.zarr`` store, else ``results.zarr`` in
    :func:`out_dir`."""
    out = out_dir(args)
    return (
        args.out.expanduser()
        if args.out is not None and args.out.suffix == ".zarr"
        else out / "results.zarr"
    )


def save_figure(fig, results: Path, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` beside the results store, and free it."""
    import matplotlib.pyplot as plt

    figures = results.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


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
