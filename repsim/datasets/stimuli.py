"""Stimulus sets: which inputs a network is shown for analysis, chosen one way everywhere.

:func:`choose_stimuli` is the one selection: ``n`` (or ``per_class`` of each class)
stimuli of a dataset split, balanced over classes and sorted by label, deterministically
(:func:`repsim.datasets.sampling.balanced_indices`), or the whole split. The paper's set
(:func:`paper_stimuli`) and a command line's ``<dataset>:<split>:<n|all>``
(:func:`parse_stimuli`, :func:`select`) are both that selection.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from repsim.datasets.names import Split, check_name, check_split
from repsim.datasets.sampling import balanced_indices
from repsim.datasets.sources import load

__all__ = ["Stimuli", "choose_stimuli", "paper_stimuli", "parse_stimuli", "select"]


class Stimuli(NamedTuple):
    """A labelled stimulus set: ``inputs [n, 784]`` float32, ``labels [n]`` int64, and
    ``indices [n]`` int64, each stimulus's position in its dataset split."""

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


def choose_stimuli(
    name: str,
    split: Split,
    n: int | None = None,
    *,
    per_class: int | None = None,
    seed: int = 0,
) -> Stimuli:
    """``n`` stimuli (or ``per_class`` of each class, or, with neither, the whole split).

    Parameters
    ----------
    name, split
        The dataset and split, as :func:`repsim.datasets.load` takes them.
    n
        How many stimuli, balanced over the classes present (the first ``n % classes``
        classes give one more); sorted by label, then by position.
    per_class
        Instead of ``n``: this many of each class present.
    seed
        Which stimuli within a class; the same seed chooses the same stimuli everywhere.

    Returns
    -------
    Stimuli
        ``(inputs [n, H*W], labels [n], indices [n])``; ``indices`` are positions in
        ``load(name, split)``.

    Examples
    --------
    >>> choose_stimuli("mnist-5k", "test", per_class=40).labels.bincount().tolist()
    [40, 40, 40, 40, 40, 40, 40, 40, 40, 40]
    """
    if n is not None and per_class is not None:
        raise ValueError(f"give n or per_class, not both (got n={n!r}, per_class={per_class!r})")
    X, y = load(name, split)
    if n is None and per_class is None:
        return Stimuli(X, y, torch.arange(len(y)))
    if per_class is not None:
        n = per_class * len(torch.unique(y))
    idx = torch.from_numpy(balanced_indices(y.numpy(), n, seed=seed))
    return Stimuli(X[idx], y[idx], idx)


def paper_stimuli(
    name: str = "mnist-5k", per_class: int = 40, split: Split = "test", seed: int = 0
) -> Stimuli:
    """The paper's probe set: ``per_class`` points of each class, sorted by label.

    Czarnecki et al. (2017) compute RDMs over 400 held-out points, 40 per class. The
    choice within a class is a seeded hash of position (see :func:`balanced_indices`), so
    the same call returns the same stimuli on every machine.

    Returns
    -------
    Stimuli
        ``(inputs [n, 784], labels [n], indices [n])``, ``n = per_class × classes``;
        ``indices`` are positions in ``load(name, split)``.

    Examples
    --------
    >>> inputs, labels, indices = paper_stimuli()
    >>> inputs.shape, labels[:3].tolist(), labels[-1].item()
    (torch.Size([400, 784]), [0, 0, 0], 9)
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    return choose_stimuli(name, split, per_class=per_class, seed=seed)


def parse_stimuli(spec: str) -> tuple[str, Split, int | None]:
    """Split a stimulus selection ``<dataset>:<split>:<n|all>`` into its parts.

    The dataset may itself contain colons (``idx:/data/kmnist:test:400``). ``n`` is
    None for ``all``.

    Examples
    --------
    >>> parse_stimuli("mnist-5k:test:400")
    ('mnist-5k', 'test', 400)
    """
    parts = spec.rsplit(":", 2) if isinstance(spec, str) else []
    if len(parts) != 3 or not parts[0]:
        raise ValueError(
            f"stimulus selection {spec!r} is not <dataset>:<split>:<n|all>, "
            "e.g. mnist-5k:test:400 (the paper's set) or mnist:train:all"
        )
    name, split, count = parts
    check_name(name)
    check_split(split)
    if count == "all":
        return name, split, None  # type: ignore[return-value]
    if not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"stimulus selection {spec!r}: the count must be a positive integer or 'all', got {count!r}"
        )
    return name, split, int(count)  # type: ignore[return-value]


def select(spec: str, *, seed: int = 0) -> Stimuli:
    """The stimuli named by ``<dataset>:<split>:<n|all>``.

    ``n`` stimuli are chosen balanced over classes and sorted by label exactly as
    :func:`paper_stimuli` chooses them, so ``mnist-5k:test:400`` is the paper's set;
    ``all`` is the whole split in its order.

    Examples
    --------
    >>> select("mnist-5k:test:400").indices.equal(paper_stimuli().indices)
    True
    """
    name, split, n = parse_stimuli(spec)
    return choose_stimuli(name, split, n, seed=seed)
