"""What the linear probes share: the (run, layer) activations of two trees, checked and
batched by shape, stacked on a device, their Gram matrices and unit scales
(:mod:`repsim.probes`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from repsim.batching import by_shape
from repsim.names import LAYER, RUN, SPLIT, SPLITS, STIMULUS, UNIT
from repsim.store import iter_layers

if TYPE_CHECKING:
    import xarray as xr

#: Widest layer probed: both probes build units × units matrices (2 GiB each in float64 here).
MAX_UNITS = 16_384


class Pair(NamedTuple):
    run: int
    layer: int
    name: str
    train: Any  # DataArray (stimulus, unit)
    test: Any


def where(run: str, layer: str) -> str:
    return f"layer {layer!r}" + (f" of run {run!r}" if run else "")


def pairs(train, test) -> tuple[list[str], list[str], list[Pair]]:
    """The (run, layer) activations of both trees, checked to match, in the trees' order."""
    import xarray as xr

    found = {}
    for split, tree in (("train", train), ("test", test)):
        if not isinstance(tree, xr.DataTree):
            raise TypeError(
                f"{split} must be an activations tree (xarray.DataTree from "
                f"repsim.store.open_activations or repsim.extract.extract), got {type(tree).__name__}"
            )
        found[split] = {(run, layer): acts for run, layer, acts in iter_layers(tree)}
    tr, te = found["train"], found["test"]
    if not tr:
        raise ValueError("the train tree holds no layers")
    if tr.keys() != te.keys():

        def show(keys):
            return ", ".join(f"{r}/{la}" if r else la for r, la in keys) or "none"

        raise ValueError(
            "train and test must hold the same runs and layers; only in train: "
            f"{show(k for k in tr if k not in te)}; only in test: {show(k for k in te if k not in tr)}. "
            "Extract both splits from the same checkpoints with the same layers"
        )
    runs = list(dict.fromkeys(run for run, _ in tr))
    layers = list(dict.fromkeys(layer for _, layer in tr))
    out = []
    for (run, layer), a in tr.items():
        b = te[(run, layer)]
        for split, acts in (("train", a), ("test", b)):
            if set(acts.dims) != {STIMULUS, UNIT}:
                raise ValueError(
                    f"{split} activations of {where(run, layer)} have dims {acts.dims}, "
                    f"expected ({STIMULUS!r}, {UNIT!r})"
                )
        if a.sizes[UNIT] > MAX_UNITS:
            raise ValueError(
                f"{where(run, layer)} has {a.sizes[UNIT]} units; the probes solve a units × "
                f"units system, feasible up to {MAX_UNITS} units: pool or subsample the units "
                "first (e.g. average a convolution's feature maps over space)"
            )
        if a.sizes[UNIT] != b.sizes[UNIT]:
            raise ValueError(
                f"{where(run, layer)} has {a.sizes[UNIT]} units in train but {b.sizes[UNIT]} "
                "in test: train and test must come from the same model"
            )
        acts = (a.transpose(STIMULUS, UNIT), b.transpose(STIMULUS, UNIT))
        out.append(Pair(runs.index(run), layers.index(layer), where(run, layer), *acts))
    return runs, layers, out


def batches(pairs: list[Pair]) -> Iterator[list[Pair]]:
    """Pairs of equal (width, train stimuli, test stimuli), in batches of bounded memory."""

    def shape(p: Pair) -> tuple[int, int, int]:
        return p.train.sizes[UNIT], p.train.sizes[STIMULUS], p.test.sizes[STIMULUS]

    return by_shape(pairs, shape, nbytes=lambda s: 4 * s[0] * (s[1] + s[2]))


def stack(arrays: list, names: list[str], split: str, device: torch.device):
    """``[L, n, d]`` float32 on ``device`` (a fresh copy) and its mean over stimuli ``[L, 1, d]``."""
    x = torch.from_numpy(np.stack([np.asarray(a.values, dtype=np.float32) for a in arrays]))
    x = x.to(device)
    mean = x.mean(dim=1, keepdim=True)
    bad = (~torch.isfinite(mean)).flatten(1).any(1).tolist()  # NaN or inf anywhere shows here
    if any(bad):
        where = ", ".join(name for name, b in zip(names, bad, strict=True) if b)
        raise ValueError(
            f"{split} activations of {where} contain NaN or inf (or values too large to sum "
            "in float32): a probe needs finite activations"
        )
    return x, mean


def gram(x: torch.Tensor) -> torch.Tensor:
    """``xᵀx [L, d, d]`` of ``x [L, n, d]``, exactly symmetric: only the blocks on and above
    the diagonal are multiplied and the others mirrored, 5/8 of the FLOPs (BLAS's syrk)."""
    d = x.shape[-1]
    parts = 4 if d >= 256 else 1
    edge = [round(i * d / parts) for i in range(parts + 1)]
    g = x.new_empty(x.shape[0], d, d)
    for i in range(parts):
        rows = slice(edge[i], edge[i + 1])
        for j in range(i, parts):
            cols = slice(edge[j], edge[j + 1])
            block = torch.bmm(x[..., rows].mT, x[..., cols])
            g[:, rows, cols] = block
            if j != i:
                g[:, cols, rows] = block.mT
    return g


def inv_std(gram: torch.Tensor, mean: torch.Tensor, n: int, standardize: bool) -> torch.Tensor:
    """``[L, d]`` float64 1/std of each unit from the centred Gram; 1 for a constant unit."""
    var = gram.diagonal(dim1=-2, dim2=-1).double() / n
    if not standardize:
        return torch.ones_like(var)
    # As StandardScaler, a unit constant over the train stimuli is centred, not scaled. A
    # float32 mean of n equal values is off by up to ~log2(n) ulp: a spread below 1e-6 of
    # the mean is that rounding, not signal.
    constant = var <= (1e-6 * mean.squeeze(1).double()) ** 2
    return torch.where(constant, 1.0, var.clamp_min(torch.finfo(torch.float64).tiny).rsqrt())


def result(values: np.ndarray, runs, layers, name: str, attrs: dict) -> xr.DataArray:
    import xarray as xr

    coords = {RUN: runs, LAYER: layers, SPLIT: list(SPLITS)}
    return xr.DataArray(values, dims=(RUN, LAYER, SPLIT), coords=coords, name=name, attrs=attrs)
