"""What the analysis commands share: their arguments, where they write, figures, the
summary table and how errors end them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: Bad input that a command reports in one line (exit status 2) instead of a traceback.
ERRORS = (ValueError, FileNotFoundError, PermissionError, TypeError)


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """``python -m repsim.<name>``'s parser: the networks, layers, stimuli, and ``--out``."""
    import matplotlib

    from repsim import extract

    matplotlib.use("Agg")  # commands write files; they never open windows
    p = argparse.ArgumentParser(prog=f"python -m repsim.{name}", description=description)
    extract.add_source_arguments(p)
    p.add_argument(
        "--out", type=Path,
        help="results store (default: results.zarr in the directory given); figures go to figures/ beside it",
    )  # fmt: skip
    return p


def results_path(args: argparse.Namespace) -> Path:
    from repsim import extract

    return args.out or extract.output_dir(args.path.expanduser()) / "results.zarr"


def save_figure(fig, results: Path, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` beside the results store, and free it."""
    import matplotlib.pyplot as plt

    figures = results.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def fail(err: BaseException) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


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
