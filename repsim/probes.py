"""Linear probes per layer: how linearly decodable the label, and the input, are from each layer.

A *classifier probe* is a multinomial logistic regression from one layer's activations
to the stimulus's class; a *regressor probe* is a ridge regression from one layer's
activations back to the network's input (the paper's linear classifier and regressor
probes; Alain & Bengio 2016). The activations are data: nothing is backpropagated into
the network.

Both fit every layer of every run at once: layers of equal width are stacked into one
``[layers, stimuli, units]`` tensor and solved together, the classifier by a batched
L-BFGS on the sum of the layers' (separable) objectives, the regressor in closed form by
a batched Cholesky solve.

Both standardise each unit with the train stimuli's mean and standard deviation first
(``standardize=True``, as :class:`sklearn.preprocessing.StandardScaler`: population
standard deviation, constant units left unscaled). Without it the L2 penalty would
measure the layer's scale rather than what it encodes: activations of a deep
randomly-initialised ReLU net shrink by orders of magnitude from layer to layer.

On runs (:mod:`repsim.runs`), :func:`analyse` extracts the train and test stimuli's
activations and fits both probes; from the command line::

    python -m repsim.probes ckpt/ --train-stimuli mnist-5k:train:all --test-stimuli mnist-5k:test:all
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from repsim import cli
from repsim._classifier_probe import classifier_probe
from repsim._regressor_probe import regressor_probe
from repsim.names import RUN, SG_LAYERS, SPLIT, SPLITS
from repsim.runs import Run, sg_marks

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["SPLITS", "analyse", "classifier_probe", "main", "regressor_probe"]


# ------------------------------------------------------------------- runs


def analyse(
    runs: Sequence[Run],
    *,
    train_stimuli: str = "{dataset}:train:all",
    test_stimuli: str = "{dataset}:test:all",
    C: float = 1.0,
    alpha: float = 1.0,
    device: str | torch.device = "auto",
    cache: str | os.PathLike | None = None,
    **extraction: Any,
) -> xr.Dataset:
    """Classifier and regressor probes of every layer of every run.

    Parameters ``runs``, ``device``, ``cache`` and ``extraction`` are those of every
    runs-level analysis (:mod:`repsim.runs`); the cache keeps
    ``probes-train.zarr`` and ``probes-test.zarr``.

    Parameters
    ----------
    train_stimuli, test_stimuli
        ``<dataset>:<split>:<n|all>`` that the probes are fitted on and tested on;
        ``{dataset}`` stands for the runs' dataset, which must then be the same for all.
        Each selection is loaded once.
    C, alpha
        As for :func:`classifier_probe` and :func:`regressor_probe`.

    Returns
    -------
    xarray.Dataset
        ``probe_accuracy`` and ``probe_mse`` ``(run, layer, split)`` for the runs extracted
        on both splits; their attrs record the stimuli, the runs and ``sg_layers``.
    """
    import xarray as xr

    from repsim.extract import extract_runs

    selected: dict = {}
    trees, specs, done = {}, {}, {}
    for split, spec in ((SPLITS[0], train_stimuli), (SPLITS[1], test_stimuli)):
        store = None if cache is None else Path(cache) / f"probes-{split}.zarr"
        trees[split] = extract_runs(
            runs, stimuli=spec, store=store, device=device, selected=selected, **extraction
        )
        done[split] = list(trees[split].attrs["runs"])
        resolved = {run.stimuli(spec) for run in runs if run.name in done[split]}
        if len(resolved) > 1:
            raise ValueError(
                f"the runs were trained on different datasets ({', '.join(sorted(resolved))}): "
                f"probe them separately or pass --{split}-stimuli"
            )
        specs[split] = resolved.pop()
    names = [name for name in done[SPLITS[0]] if name in done[SPLITS[1]]]
    if not names:
        raise ValueError("no run could be probed on both its train and test stimuli")
    for split in SPLITS:
        if done[split] != names:
            trees[split] = xr.DataTree.from_dict({f"/{r}": trees[split][r] for r in names})
    train, test = (trees[split] for split in SPLITS)
    accuracy = classifier_probe(train, test, C=C, device=device)
    inputs = [selected[specs[split]].inputs for split in SPLITS]
    mse = regressor_probe(train, test, *inputs, alpha=alpha, device=device)
    attrs = {
        "train_stimuli": specs[SPLITS[0]],
        "test_stimuli": specs[SPLITS[1]],
        "runs": names,
        SG_LAYERS: {k: v for k, v in sg_marks(runs).items() if k in names},
    }
    accuracy.attrs.update(attrs)
    mse.attrs.update(attrs)
    return xr.Dataset({"probe_accuracy": accuracy, "probe_mse": mse})


# ------------------------------------------------------------------- command line


def _add_arguments(p) -> None:
    p.add_argument(
        "--train-stimuli",
        default="{dataset}:train:all",
        help="stimuli the probes are fitted on (default: the run's dataset, whole train split)",
    )
    p.add_argument(
        "--test-stimuli",
        default="{dataset}:test:all",
        help="held-out stimuli (default: the run's dataset, whole test split)",
    )
    p.add_argument(
        "--C",
        type=float,
        default=1.0,
        help="inverse L2 penalty of the classifier, as LogisticRegression(C=)",
    )
    p.add_argument(
        "--alpha", type=float, default=1.0, help="ridge penalty of the regressor, as Ridge(alpha=)"
    )


def _command(runs: list[Run], context: cli.Context) -> None:
    from repsim import plots

    args = context.args
    computed = context.map(
        analyse,
        runs,
        train_stimuli=args.train_stimuli,
        test_stimuli=args.test_stimuli,
        C=args.C,
        alpha=args.alpha,
        **context.analysis(),
    )
    results = context.save(computed)
    accuracy, mse = results["probe_accuracy"], results["probe_mse"]
    fig = context.figure(plots.probe_curves(accuracy, mse), "probes")

    def cell(run: str, i: int) -> str:
        a = float(accuracy.sel({RUN: run, SPLIT: "test"})[i])
        return f"{a:.3f} / {float(mse.sel({RUN: run, SPLIT: 'test'})[i]):.4f}"

    context.summary(
        f"held-out probe accuracy / MSE (fitted on {accuracy.attrs['train_stimuli']}, tested on {accuracy.attrs['test_stimuli']})",
        results,
        accuracy,
        cell,
        [fig],
        width=16,
    )


#: ``--stimuli`` is not among its options: the probes' stimuli are ``--train-stimuli``
#: and ``--test-stimuli``.
_DESCRIPTION = "Linear classifier and regressor probes per layer."
COMMAND = cli.Command("probes", _DESCRIPTION, _command, _add_arguments, stimuli=False)
#: ``python -m repsim.probes``: classifier and regressor probes of every run, stored and plotted.
main = COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
