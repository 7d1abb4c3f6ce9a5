"""Normalised weight norms: how the size of each hidden layer's linear map compares with
the others' (the paper's normalised weight norm).

For hidden layers ``k = 1..L`` with weight tensors ``W_k``,
``weight_norm_k = ||W_k||²_F / Σ_j ||W_j||²_F``: squared Frobenius norms (of the tensor
flattened, so a convolution's kernel counts whole), normalised to sum to 1. Which tensor
is "the layer's linear map" comes from the checkpoint for our models
(``block<k>.linear.weight``) and from :func:`weight_keys` for anyone else's.

On runs (:mod:`repsim.runs`), :func:`analyse` returns ``weight_norm (run, layer)``; from
the command line::

    python -m repsim.norms ckpt/
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from repsim import cli
from repsim.names import LAYER, RUN, SG_LAYERS
from repsim.runs import NothingAnalysed, Run, attempt, sg_marks

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["analyse", "main", "weight_keys", "weight_norms"]


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=4, cutoff=0.5)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def weight_norms(
    state_dict: Mapping[str, torch.Tensor], layer_weights: Mapping[str, str]
) -> xr.DataArray:
    """Squared Frobenius norm of each hidden layer's weight, as a fraction of their sum.

    Parameters
    ----------
    state_dict
        Parameter name → tensor (or array): a model's ``state_dict()``, or the tensors of
        a checkpoint's ``model.safetensors``.
    layer_weights
        Layer name → the ``state_dict`` key of its weight, in layer order, e.g.
        ``{"block1": "block1.linear.weight", ...}`` (:func:`weight_keys` finds them).

    Returns
    -------
    xarray.DataArray
        ``weight_norm``, float64, dims ``(layer,)`` in the order of ``layer_weights``;
        sums to 1. ``attrs["keys"]`` lists the state_dict keys used.

    Examples
    --------
    >>> sd = {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(2, 6)}
    >>> weight_norms(sd, {"a": "a.weight", "b": "b.weight"}).values.tolist()
    [0.25, 0.75]
    """
    import xarray as xr

    if not isinstance(layer_weights, Mapping) or not layer_weights:
        raise ValueError(
            f"layer_weights must be a non-empty mapping of layer name to state_dict key, got {layer_weights!r}"
        )
    keys = list(state_dict)
    squares = []
    for layer, key in layer_weights.items():
        if key not in state_dict:
            raise ValueError(
                f"the state_dict has no {key!r} (the weight of layer {layer!r}){_close(key, keys)}; "
                "repsim.norms.weight_keys(model, layers) finds each layer's weight"
            )
        w = torch.as_tensor(state_dict[key]).detach().to("cpu", torch.float64)
        sq = float(torch.sum(w * w))
        if not np.isfinite(sq):
            raise ValueError(f"the weight {key!r} of layer {layer!r} holds NaN or inf")
        squares.append(sq)
    total = sum(squares)
    if total == 0:
        raise ValueError(
            f"every weight is zero ({', '.join(layer_weights.values())}): the norms cannot be "
            "normalised; check that the state_dict holds trained (or initialised) weights"
        )
    return xr.DataArray(
        np.array(squares) / total,
        dims=(LAYER,),
        coords={LAYER: list(layer_weights)},
        name="weight_norm",
        attrs={"keys": list(layer_weights.values())},
    )


def _weight_of(module: torch.nn.Module, name: str) -> str | None:
    """The state_dict key of ``module``'s own weight matrix, or its first descendant's."""
    for sub_name, sub in module.named_modules(prefix=name):
        w = sub._parameters.get("weight") if hasattr(sub, "_parameters") else None
        if w is not None and w.ndim >= 2:
            return f"{sub_name}.weight"
    return None


def weight_keys(
    model: torch.nn.Module, layers: Sequence[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The ``state_dict`` key of each named layer's weight matrix, for any model.

    A layer's weight is its module's own ``weight`` parameter, or else that of the first
    module inside it (in ``named_modules()`` order) — in either case only a ``weight``
    of two or more dims, a linear map: the 1-D scale of a BatchNorm or LayerNorm is
    skipped. ``overrides`` name the key outright for the layers where that rule does not
    fit.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``.
    layers
        Module names (``dict(model.named_modules())``), e.g. the checkpoint's ``layers``.
    overrides
        Layer → state_dict key, used instead of the rule for those layers.

    Returns
    -------
    dict
        Layer → state_dict key, in the order of ``layers``; pass it to :func:`weight_norms`.

    Examples
    --------
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4)), torch.nn.ReLU())
    >>> weight_keys(net, ["0"])
    {'0': '0.1.weight'}
    """
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
    overrides = dict(overrides or {})
    modules = {name: m for name, m in model.named_modules() if name}
    keys = list(model.state_dict())
    unknown = [layer for layer in layers if layer not in modules]
    if unknown:
        raise ValueError(
            "; ".join(f"unknown layer {u!r}{_close(u, list(modules))}" for u in unknown)
            + ". repsim.extract.layer_names(model) lists the valid names"
        )
    stray = [layer for layer in overrides if layer not in layers]
    if stray:
        raise ValueError(
            f"overrides name layers that are not in layers: {', '.join(map(repr, stray))}"
        )
    found, missing = {}, []
    for layer in layers:
        if layer in overrides:
            key = overrides[layer]
            if key not in keys:
                raise ValueError(
                    f"override for layer {layer!r}: the model's state_dict has no {key!r}"
                    + _close(key, keys)
                )
            found[layer] = key
            continue
        key = _weight_of(modules[layer], layer)
        if key is None or key not in keys:  # not in the state_dict: e.g. a parametrised weight
            missing.append(layer)
        else:
            found[layer] = key
    if missing:
        raise ValueError(
            "no weight matrix (a 'weight' parameter of 2 or more dims) in or under "
            + ", ".join(f"{m!r} ({type(modules[m]).__name__})" for m in missing)
            + "; name one with overrides={layer: state_dict key}"
        )
    return found


# ------------------------------------------------------------------- runs


def analyse(
    runs: Sequence[Run],
    *,
    weights: Mapping[str, str] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Normalised weight norms of every run's layers.

    ``runs`` and ``on_error`` are as for every runs-level analysis (:mod:`repsim.runs`).

    Parameters
    ----------
    weights
        Layer → state_dict key overriding which weight is that layer's, for every run
        (default: the checkpoint's ``layer_weights``, else :func:`weight_keys`' rule).
    on_error
        ``on_error(run, err)`` is called for a run that fails, which is then left out;
        without it, the error is raised. When every run fails,
        :class:`repsim.runs.NothingAnalysed` is raised.
    log
        Called with one line per run (which weights were used), e.g. ``print``.

    Returns
    -------
    xarray.Dataset
        ``weight_norm (run, layer)``, as :func:`weight_norms` computes it, NaN where a run
        lacks a layer; its attrs record the runs and ``sg_layers``.

    Examples
    --------
    >>> from repsim import runs
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> analyse([runs.from_model(net, ["0", "2"])]).weight_norm.dims
    ('run', 'layer')
    """
    import xarray as xr

    def one(run: Run) -> xr.DataArray:
        known = {k: v for k, v in run.info.layer_weights.items() if k in run.layers}
        keys = weight_keys(run.model, run.layers, {**known, **dict(weights or {})})
        norms = weight_norms(run.model.state_dict(), keys).expand_dims({RUN: [run.name]})
        if log is not None:
            log(f"{run.name}: {len(keys)} layers ({', '.join(list(keys.values())[:2])}, …)")
        return norms

    computed = attempt(runs, one, on_error)
    parts, done = [norms for _, norms in computed], [run.name for run, _ in computed]
    if not parts:
        raise NothingAnalysed(f"no run could be analysed ({len(runs)} failed)")
    norms = xr.concat(parts, dim=RUN, join="outer").rename("weight_norm")
    norms.attrs = {
        "runs": done,
        "weights": "squared Frobenius norm / sum over layers",
        SG_LAYERS: {k: v for k, v in sg_marks(runs).items() if k in done},
    }
    return norms.to_dataset()


# ------------------------------------------------------------------- command line


def _overrides(value: str | None) -> dict[str, str]:
    pairs = [p.strip() for p in (value or "").split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1]
    if bad:
        raise ValueError(f"--weights takes layer=state_dict_key pairs, got {', '.join(bad)}")
    return dict(p.split("=") for p in pairs)


def _add_arguments(p) -> None:
    p.add_argument(
        "--weights",
        help="layer=state_dict_key pairs overriding which weight is each layer's (comma-separated)",
    )


def _command(runs: list[Run], context: cli.Context) -> None:
    from repsim import plots

    overrides = _overrides(context.args.weights)
    computed = context.map(
        analyse, runs, weights=overrides, on_error=context.failures.add, log=print
    )
    results = context.save(computed)
    norms = results["weight_norm"]
    fig = context.figure(plots.weight_norm_curves(norms), "weight_norm")
    context.summary(
        "normalised weight norm (sums to 1 over each run's layers)",
        results,
        norms,
        lambda run, i: f"{float(norms.sel({RUN: run})[i]):.4f}",
        [fig],
    )


_DESCRIPTION = "Normalised squared Frobenius norm of each hidden layer's weights."
COMMAND = cli.Command("norms", _DESCRIPTION, _command, _add_arguments, stimuli=False)
#: ``python -m repsim.norms``: normalised weight norms of every run, stored and plotted.
main = COMMAND.main


if __name__ == "__main__":
    sys.exit(main())
