"""The names of datasets and splits, checked at the public boundary."""

from __future__ import annotations

import difflib
from typing import Literal

from repsim.names import SPLITS

__all__ = ["DATASETS", "SPLITS", "DatasetNotFoundError", "Split", "check_name", "check_split"]

Split = Literal["train", "test"]
DATASETS: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")  # and "idx:<directory>"


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is not on this machine; the message says how to get it."""


def check_name(name: str) -> None:
    """Raise a ValueError naming the valid datasets if ``name`` is not one.

    Examples
    --------
    >>> check_name("idx:data/kmnist")  # any directory of IDX files is a dataset name
    """
    if name in DATASETS or name.startswith("idx:"):
        return
    close = difflib.get_close_matches(name.lower(), DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown dataset {name!r}: expected one of {', '.join(map(repr, DATASETS))} "
        f"or 'idx:<directory>' for a directory of IDX files.{hint}"
    )


def check_split(split: str) -> None:
    """Raise a ValueError naming the valid splits if ``split`` is not one."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, SPLITS))}")
