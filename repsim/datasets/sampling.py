"""A deterministic choice of positions balanced over classes, the same on every machine."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["balanced_indices"]


def _hash_rank(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (seed, key): a pseudo-random order that is the same everywhere."""
    mask = (1 << 64) - 1
    z = keys.astype(np.uint64) + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & mask)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def balanced_indices(labels: np.ndarray | torch.Tensor, n: int, *, seed: int = 0) -> np.ndarray:
    """Choose ``n`` positions balanced over classes, sorted by label, deterministically.

    Each class contributes ``n // k`` items (``k`` classes present); the first
    ``n % k`` classes contribute one more. Within a class, items are ranked by a seeded
    integer hash of their position (splitmix64), so the choice does not depend on the
    numpy version or platform, and the chosen items are returned in ascending position.

    Parameters
    ----------
    labels
        Integer labels ``[N]``.
    n
        How many items to choose, ``1 <= n <= N``.
    seed
        A non-negative integer; different seeds give (mostly) different choices.

    Returns
    -------
    np.ndarray
        int64 positions ``[n]``, sorted by (label, position).

    Examples
    --------
    >>> balanced_indices(np.array([1, 0, 1, 0, 1, 0]), 4).shape
    (4,)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    classes, counts = np.unique(labels, return_counts=True)
    want = np.full(len(classes), n // len(classes))
    want[: n % len(classes)] += 1
    short = [
        (int(c), int(h), int(w)) for c, h, w in zip(classes, counts, want, strict=True) if h < w
    ]
    if short:
        raise ValueError(
            f"cannot choose {n} items balanced over {len(classes)} classes: "
            + ", ".join(f"class {c} has {h} items, needs {w}" for c, h, w in short)
        )
    rank = _hash_rank(np.arange(len(labels)), int(seed))
    chosen = []
    for cls, k in zip(classes, want, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(np.sort(members[np.argsort(rank[members], kind="stable")[:k]]))
    return np.concatenate(chosen).astype(np.int64)
