"""Batches of layers for the analyses that stack layers of one shape into one tensor."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

__all__ = ["BATCH_BYTES", "by_shape"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: How much memory one batch may take: stacked inputs, or the output of one batched product.
BATCH_BYTES = 1 << 30


def by_shape(
    items: Iterable[T],
    shape: Callable[[T], K],
    nbytes: Callable[[K], int],
    budget: int = BATCH_BYTES,
) -> Iterator[list[T]]:
    """``items`` of equal ``shape(item)``, in batches of at most ``budget`` bytes.

    Groups come in the order their first item does, items in their own order; a batch
    holds at most ``budget // nbytes(shape)`` items, and at least one.

    Examples
    --------
    >>> list(by_shape([3, 5, 3, 3], shape=lambda x: x, nbytes=lambda x: 4, budget=8))
    [[3, 3], [3], [5]]
    """
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(shape(item), []).append(item)
    for key, group in groups.items():
        step = max(1, budget // max(1, nbytes(key)))
        for s in range(0, len(group), step):
            yield group[s : s + step]
