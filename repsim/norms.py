"""Normalised weight norms: how the size of each hidden layer's linear map compares with
the others' (the paper's normalised weight norm).

For hidden layers ``k = 1..L`` with weight tensors ``W_k``,
``weight_norm_k = ||W_k||²_F / Σ_j ||W_j||²_F``: squared Frobenius norms (of the tensor
flattened, so a convolution's kernel counts whole), normalised to sum to 1. Which tensor
is "the layer's linear map" comes from the checkpoint for our models
(``block<k>.linear.weight``) and from :func:`weight_keys` for anyone else's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["main", "weight_keys", "weight_norms"]


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=4, cutoff=0.5)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def weight_norms(state_dict: Mapping[str, torch.Tensor], layer_weights: Mapping[str, str]):
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
        dims=("layer",),
        coords={"layer": list(layer_weights)},
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


# ------------------------------------------------------------------- command line


def _overrides(value: str | None) -> dict[str, str]:
    pairs = [p.strip() for p in (value or "").split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1]
    if bad:
        raise ValueError(f"--weights takes layer=state_dict_key pairs, got {', '.join(bad)}")
    return dict(p.split("=") for p in pairs)


def main(argv: Sequence[str] | None = None, *, failures=None) -> int:
    """``python -m repsim.norms``: normalised weight norms of every run, stored and plotted.

    ``failures`` (a :class:`repsim._cli.Failures`, as :mod:`repsim.report` passes) collects
    the runs that fail; without it, this command lists them itself.
    """
    import xarray as xr

    from repsim import _cli, extract, plots, store

    p = _cli.parser("norms", "Normalised squared Frobenius norm of each hidden layer's weights.")
    p.add_argument(
        "--weights",
        help="layer=state_dict_key pairs overriding which weight is each layer's (comma-separated)",
    )
    args = p.parse_args(argv)
    own = failures is None
    failures = _cli.Failures(p.prog, argv, args.debug) if own else failures
    try:
        out = _cli.results_path(args)
        overrides = _overrides(args.weights)
        parts, infos = [], []
        for run, model, info in extract.iter_runs(args, failures):
            try:
                known = {k: v for k, v in info.layer_weights.items() if k in info.layers}
                keys = weight_keys(model, info.layers, {**known, **overrides})
                parts.append(weight_norms(model.state_dict(), keys).expand_dims(run=[run]))
            except Exception as err:
                failures.add(run, err)
                continue
            infos.append((run, info))
            print(f"{run}: {len(keys)} layers ({', '.join(list(keys.values())[:2])}, …)")
        if not parts:
            raise _cli.NothingAnalysed(f"no run could be analysed ({len(failures.items)} failed)")
        norms = xr.concat(parts, dim="run", join="outer").rename("weight_norm")
        runs = [r for r, _ in infos]
        provenance = {"runs": runs, "weights": "squared Frobenius norm / sum over layers"}
        store.write_result(out, norms, provenance=provenance)
        fig = _cli.save_figure(
            plots.weight_norm_curves(norms, marks=extract.sg_marks(infos)), out, "weight_norm"
        )
    except _cli.ERRORS as err:
        return failures.fail(err)
    _cli.layer_table(
        "normalised weight norm (sums to 1 over each run's layers)", runs,
        [str(v) for v in norms["layer"].values], lambda run, i: f"{float(norms.sel(run=run)[i]):.4f}",
    )  # fmt: skip
    print(f"\n→ {out} (weight_norm), {fig}")
    return failures.end() if own else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
