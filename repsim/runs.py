"""Runs: the networks an analysis compares, each loaded (and its weights hashed) once.

A :class:`Run` is a network with its name and :class:`repsim.checkpoints.CheckpointInfo`.
Build runs from checkpoints (:func:`discover`) or from models you hold (:func:`from_model`),
and pass them to extraction and to every analysis: none of them reads a checkpoint again::

    from repsim import norms, probes, rdm, runs

    nets = runs.discover("ckpt/")              # every checkpoint under ckpt/
    rdms = rdm.analyse(nets)                   # Dataset: rdm, diag_l2 (run, layer, ...)
    fits = probes.analyse(nets)                # probe_accuracy, probe_mse (run, layer, split)
    weights = norms.analyse(nets)              # weight_norm (run, layer)

Every analysis has one runs-level function,
``<analysis>.analyse(runs, *, <its own options>, device="auto", cache=None, **extraction)``,
returning an :class:`xarray.Dataset` with dims ``(run, layer, …)``:

runs
    :class:`Run` objects (:func:`discover`, :func:`from_model`).
device
    ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
cache
    A directory to keep the activations in (up-to-date runs are reused); None extracts
    them in memory.
extraction
    Other keywords of :func:`repsim.extract.extract_runs` (``batch_size``, ``force``,
    ``progress``, ``on_error``: called ``on_error(run, err)`` for a run that fails, which
    is then left out; ``log``).

An analysis that extracts nothing (:func:`repsim.norms.analyse`) takes only the keywords
it uses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from repsim import checkpoints, weights

__all__ = [
    "DEFAULT_STIMULI",
    "NothingAnalysed",
    "Run",
    "attempt",
    "discover",
    "from_model",
    "sg_marks",
    "untrained",
]

#: The paper's stimuli (400 test points, 40 per class) of the run's own dataset.
DEFAULT_STIMULI = "{dataset}:test:400"
#: The dataset of a run whose checkpoint does not name one (external weights).
DEFAULT_DATASET = "mnist-5k"


T = TypeVar("T")
R = TypeVar("R")


class NothingAnalysed(ValueError):
    """Every run given to an analysis failed (each was reported to its ``on_error``)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """One network to analyse: its name, the model (on the CPU, in eval mode) and what its
    checkpoint says about it (layers, method, dataset, the weights' content hash)."""

    name: str
    model: torch.nn.Module
    info: checkpoints.CheckpointInfo

    @property
    def layers(self) -> tuple[str, ...]:
        """The hidden layers analysed, in order (module names)."""
        return self.info.layers

    @property
    def dataset(self) -> str:
        """The dataset the network was trained on (``mnist-5k`` when not recorded)."""
        return self.info.dataset or DEFAULT_DATASET

    def stimuli(self, spec: str | None = None) -> str:
        """The stimulus selection ``<dataset>:<split>:<n|all>`` for this run.

        ``spec`` may say ``{dataset}`` for the run's own dataset; default
        :data:`DEFAULT_STIMULI`, the paper's 400 test points.
        """
        return (spec or DEFAULT_STIMULI).format(dataset=self.dataset)

    @property
    def sg_layers(self) -> list[str]:
        """The layers after which a synthetic gradient sits (``checkpoint.json``'s method)."""
        positions = (self.info.method or {}).get("sg_layers") or []
        return [self.layers[k - 1] for k in positions if 0 < k <= len(self.layers)]


def discover(
    path: str | os.PathLike,
    *,
    model: str | Callable[..., torch.nn.Module] | None = None,
    model_kwargs: dict | None = None,
    layers: Sequence[str] | None = None,
    trust: bool = False,
    strict: bool = True,
    max_model_bytes: int | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> list[Run]:
    """Every network under ``path``, each loaded once (:func:`repsim.checkpoints.load`).

    Parameters
    ----------
    path
        A directory of checkpoints (searched recursively, :func:`repsim.checkpoints.discover`),
        one checkpoint directory, or a weights file (then ``model`` names its architecture).
    on_error
        ``on_error(run, err)`` is called for a checkpoint that cannot be loaded, which is
        then left out; without it, the error is raised.

    Other parameters are those of :func:`repsim.checkpoints.load`.

    Examples
    --------
    >>> [run.name for run in discover("ckpt")]  # doctest: +SKIP
    ['bp', 'dfa', 'sg-full', 'sg-single']
    """
    path = Path(path).expanduser()
    if path.is_file():
        targets = [(path.stem, path)]
    else:
        targets = checkpoints.discover(path)
        if not targets:
            raise FileNotFoundError(
                f"no checkpoint (a directory with {checkpoints.META}) under {path}"
            )
    options = {"model": model, "model_kwargs": model_kwargs, "layers": layers, "trust": trust}
    options.update(strict=strict, max_model_bytes=max_model_bytes)
    loaded = attempt(
        targets,
        lambda target: checkpoints.load(target[1], **options),
        on_error,
        name=lambda target: target[0],
    )
    return [Run(name, *net_info) for (name, _), net_info in loaded]


def from_model(
    model: torch.nn.Module,
    layers: Sequence[str],
    *,
    name: str = "model",
    dataset: str | None = None,
    sg_layers: Sequence[str] = (),
) -> Run:
    """A run of a network held in memory (a notebook's model, an external library's).

    Its weights are hashed now, as a checkpoint's are when loaded: after changing them
    (training on), make a new run, or stored activations would be taken as up to date.

    Parameters
    ----------
    layers
        Module names whose outputs are the hidden layers (``repsim.extract.layer_names``).
    dataset
        The dataset its stimuli come from by default (``mnist-5k`` when None).
    sg_layers
        Layers after which a synthetic gradient sits, marked in the figures.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(784, 8), torch.nn.ReLU())
    >>> run = from_model(net, ["0", "1"], name="tiny")
    >>> run.name, run.layers, run.stimuli()
    ('tiny', ('0', '1'), 'mnist-5k:test:400')
    """
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
    unknown = [s for s in sg_layers if s not in layers]
    if unknown:
        raise ValueError(f"sg_layers {unknown} are not among the layers {list(layers)}")
    info = checkpoints.CheckpointInfo(
        name=name,
        path=Path(f"<{name} in memory>"),
        layers=tuple(layers),
        layer_weights={},
        method={"sg_layers": [list(layers).index(s) + 1 for s in sg_layers]},
        dataset=dataset,
        metrics={},
        factory=f"{type(model).__module__}:{type(model).__qualname__}",
        weights_sha256=weights.weights_sha256(model),
        meta={},
    )
    return Run(name, model, info)


def untrained(run: Run, seed: int) -> Run:
    """The same architecture at initialisation: a copy of ``run``'s network whose every
    module with ``reset_parameters()`` was reset under ``torch.manual_seed(seed)``
    (BatchNorm's running statistics too). Named like ``run``; the baseline a similarity
    score is read against, since similarity rises with width and depth alone.

    A parameter that no ``reset_parameters()`` resets (one a custom module owns) would keep
    its trained value: that is an error naming it.
    """
    import copy

    model = copy.deepcopy(run.model)
    before = {k: v.clone() for k, v in model.named_parameters()}
    reset: set[str] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prefix, module in model.named_modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset |= {
                    f"{prefix}.{n}".lstrip(".") for n, _ in module.named_parameters(recurse=False)
                }
            if callable(getattr(module, "reset_running_stats", None)):
                module.reset_running_stats()
    kept = [k for k in before if k not in reset]
    if kept:
        raise ValueError(
            f"{run.name}: no reset_parameters() re-initialises {', '.join(kept[:3])}"
            + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
            + "; an untrained baseline of this model cannot be built (give its modules a reset_parameters())"
        )
    model.eval()
    info = dataclasses.replace(
        run.info,
        path=Path(f"<{run.name} at initialisation, seed {seed}>"),
        weights_sha256=weights.weights_sha256(model),
        metrics={},
    )
    return Run(run.name, model, info)


def sg_marks(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Run name → the layers after which a synthetic gradient sits (for the figures)."""
    return {run.name: run.sg_layers for run in runs}


def attempt(
    items: Iterable[T],
    fn: Callable[[T], R],
    on_error: Callable[[str, BaseException], None] | None,
    *,
    name: Callable[[T], str] = lambda run: run.name,
) -> list[tuple[T, R]]:
    """``(item, fn(item))`` for each item that succeeds, in order.

    ``on_error(name(item), err)`` is called for an item whose ``fn`` raises, which is then
    left out; without ``on_error``, the error is raised. This is how every runs-level
    function goes on past a failing run.
    """
    done = []
    for item in items:
        try:
            done.append((item, fn(item)))
        except Exception as err:
            if on_error is None:
                raise
            on_error(name(item), err)
    return done
