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

import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from repsim import cli
from repsim._lbfgs import lbfgs
from repsim.batching import by_shape
from repsim.devices import resolve_device
from repsim.names import INDEX, LABEL, LAYER, RUN, SG_LAYERS, SPLIT, SPLITS, STIMULUS, UNIT
from repsim.runs import Run, sg_marks
from repsim.store import iter_layers

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["SPLITS", "analyse", "classifier_probe", "main", "regressor_probe"]

_PRED_BYTES = 1 << 28  # test predictions of the regressor held at once
#: Widest layer probed: both probes build units × units matrices (2 GiB each in float64 here).
_MAX_UNITS = 16_384


class _Pair(NamedTuple):
    run: int
    layer: int
    name: str
    train: Any  # DataArray (stimulus, unit)
    test: Any


# ------------------------------------------------------------------ inputs


def _where(run: str, layer: str) -> str:
    return f"layer {layer!r}" + (f" of run {run!r}" if run else "")


def _pairs(train, test) -> tuple[list[str], list[str], list[_Pair]]:
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
    pairs = []
    for (run, layer), a in tr.items():
        b = te[(run, layer)]
        for split, acts in (("train", a), ("test", b)):
            if set(acts.dims) != {STIMULUS, UNIT}:
                raise ValueError(
                    f"{split} activations of {_where(run, layer)} have dims {acts.dims}, "
                    f"expected ({STIMULUS!r}, {UNIT!r})"
                )
        if a.sizes[UNIT] > _MAX_UNITS:
            raise ValueError(
                f"{_where(run, layer)} has {a.sizes[UNIT]} units; the probes solve a units × "
                f"units system, feasible up to {_MAX_UNITS} units: pool or subsample the units "
                "first (e.g. average a convolution's feature maps over space)"
            )
        if a.sizes[UNIT] != b.sizes[UNIT]:
            raise ValueError(
                f"{_where(run, layer)} has {a.sizes[UNIT]} units in train but {b.sizes[UNIT]} "
                "in test: train and test must come from the same model"
            )
        pairs.append(
            _Pair(runs.index(run), layers.index(layer), _where(run, layer),
                  a.transpose(STIMULUS, UNIT), b.transpose(STIMULUS, UNIT))
        )  # fmt: skip
    return runs, layers, pairs


def _batches(pairs: list[_Pair]) -> Iterator[list[_Pair]]:
    """Pairs of equal (width, train stimuli, test stimuli), in batches of bounded memory."""

    def shape(p: _Pair) -> tuple[int, int, int]:
        return p.train.sizes[UNIT], p.train.sizes[STIMULUS], p.test.sizes[STIMULUS]

    return by_shape(pairs, shape, nbytes=lambda s: 4 * s[0] * (s[1] + s[2]))


def _stack(arrays: list, names: list[str], split: str, device: torch.device):
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


def _gram(x: torch.Tensor) -> torch.Tensor:
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


def _inv_std(gram: torch.Tensor, mean: torch.Tensor, n: int, standardize: bool) -> torch.Tensor:
    """``[L, d]`` float64 1/std of each unit from the centred Gram; 1 for a constant unit."""
    var = gram.diagonal(dim1=-2, dim2=-1).double() / n
    if not standardize:
        return torch.ones_like(var)
    # As StandardScaler, a unit constant over the train stimuli is centred, not scaled. A
    # float32 mean of n equal values is off by up to ~log2(n) ulp: a spread below 1e-6 of
    # the mean is that rounding, not signal.
    constant = var <= (1e-6 * mean.squeeze(1).double()) ** 2
    return torch.where(constant, 1.0, var.clamp_min(torch.finfo(torch.float64).tiny).rsqrt())


def _result(values: np.ndarray, runs, layers, name: str, attrs: dict) -> xr.DataArray:
    import xarray as xr

    return xr.DataArray(
        values, dims=(RUN, LAYER, SPLIT),
        coords={RUN: runs, LAYER: layers, SPLIT: list(SPLITS)}, name=name, attrs=attrs,
    )  # fmt: skip


# --------------------------------------------------------------- classifier


def _labels(pairs: list[_Pair]) -> np.ndarray:
    """The classes: every label of the train stimuli, sorted; checks the labels exist."""
    classes = set()
    for p in pairs:
        for split, acts in (("train", p.train), ("test", p.test)):
            if LABEL not in acts.coords or acts.coords[LABEL].dims != (STIMULUS,):
                raise ValueError(
                    f"{split} activations of {p.name} have no 'label' coordinate on "
                    f"{STIMULUS!r}: extract them with labels (repsim.extract.extract(..., labels=y))"
                )
            labels = np.asarray(acts.coords[LABEL].values)
            if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
                raise ValueError(
                    f"{split} labels of {p.name} must be non-negative integers (-1 means "
                    f"unknown), got {labels[:5]}...: extract them with labels"
                )
        classes.update(np.unique(p.train.coords[LABEL].values).tolist())
    return np.array(sorted(classes), dtype=np.int64)


class _Softmax(NamedTuple):
    """One batch of L-BFGS problems, the layers on the first dim of each tensor."""

    x: torch.Tensor  # [L, n, d] centred train activations
    y: torch.Tensor  # [L, n] class codes
    scale: torch.Tensor  # [L, d] 1 / std of each unit (ones without standardising)
    mask: torch.Tensor  # [L, K] 0 for classes present, -inf for the others
    lam: torch.Tensor  # [L] the L2 penalty
    inv: torch.Tensor  # [L, d, d] the preconditioner's inverse Gram factor
    inv_b: torch.Tensor  # [L] its factor for the intercept


def _logistic(data: _Softmax, theta: torch.Tensor):
    """``(f [L] float64, ∇f like theta, logits [L, n, K])`` of mean CE + lam/2 |W|²."""
    x, y, scale, mask, lam = data.x, data.y, data.scale, data.mask, data.lam
    n = x.shape[1]
    w, b = theta[..., :-1], theta[..., -1]
    logits = torch.baddbmm((b + mask).unsqueeze(1), x, (w * scale.unsqueeze(1)).transpose(1, 2))
    lse = logits.logsumexp(-1)
    f = (lse - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)).sum(1, dtype=torch.float64) / n
    f = f + lam.double() / 2 * (w.double() ** 2).sum((1, 2))
    r = (logits - lse.unsqueeze(-1)).exp_()
    r.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(r[..., :1], -1.0)).div_(n)
    gw = torch.bmm(r.transpose(1, 2), x).mul_(scale.unsqueeze(1)).add_(lam[:, None, None] * w)
    return f, torch.cat([gw, r.sum(1).unsqueeze(-1)], -1), logits


def _precondition(data: _Softmax, g: torch.Tensor) -> torch.Tensor:
    """Apply the inverse of the Hessian's Kronecker model at the origin to ``g [L, K, d+1]``."""
    inv, inv_b = data.inv, data.inv_b
    return torch.cat([torch.bmm(g[..., :-1], inv), g[..., -1:] * inv_b[:, None, None]], -1)


def _fit_classifier(batch, classes, C, standardize, tol, max_iter, device):
    """Train and test accuracy ``[L, 2]``, iterations and convergence ``[L]`` of one batch."""
    names = [p.name for p in batch]
    x, mean = _stack([p.train for p in batch], names, "train", device)
    x.sub_(mean)  # centred: the intercept is not penalised
    n_layers, n, width = x.shape
    k = len(classes)

    def codes(acts):
        lab = np.asarray(acts.coords[LABEL].values)
        pos = np.clip(np.searchsorted(classes, lab), 0, k - 1)
        return np.where(classes[pos] == lab, pos, -1)

    y = torch.from_numpy(np.stack([codes(p.train) for p in batch])).to(device)
    present = torch.zeros(n_layers, k, dtype=torch.bool, device=device)
    present.scatter_(1, y, True)
    n_present = present.sum(1)
    if (n_present < 2).any():
        raise ValueError(
            f"the train stimuli of {names[int(torch.argmin(n_present))]} hold one class: a "
            "classifier probe needs at least two"
        )
    mask = torch.where(present, 0.0, -torch.inf)  # absent classes are never predicted
    # scikit-learn fits two classes with one weight vector and the penalty λ/2|v|²; the
    # two-class softmax with w = ±v/2 equals it when its own penalty is doubled.
    lam = torch.full((n_layers,), 1.0 / (C * n), dtype=torch.float64, device=device)
    lam = torch.where(n_present == 2, 2 * lam, lam)

    gram = _gram(x)
    inv_std = _inv_std(gram, mean, n, standardize)
    # preconditioner: the Hessian at W = 0 is (X̃ᵀX̃/n) ⊗ (I − 11ᵀ/K)/K; keep c X̃ᵀX̃/n + λ
    c = 1.0 / n_present.double()
    h = gram.double() * (inv_std.unsqueeze(-1) * inv_std.unsqueeze(-2)) / n
    h = h * c[:, None, None] + torch.diag_embed((lam + 1e-6 * c).unsqueeze(-1).expand(-1, width))
    del gram
    chol, info = torch.linalg.cholesky_ex(h)
    if (info > 0).any():  # pragma: no cover - h is positive definite by construction
        raise RuntimeError("internal: the probe's preconditioner is not positive definite")
    inv = torch.cholesky_inverse(chol).float()
    data = _Softmax(x, y, inv_std.float(), mask, lam.float(), inv, (1.0 / (c + 1e-6 * c)).float())
    theta = torch.zeros(n_layers, k, width + 1, device=device)
    theta, n_iter, converged = lbfgs(
        _logistic, _precondition, data, theta, tol=tol, max_iter=max_iter
    )

    acc = np.empty((n_layers, 2))
    acc[:, 0] = (_logistic(data, theta)[2].argmax(-1) == y).double().mean(1).cpu().numpy()
    del x, data
    xt = _stack([p.test for p in batch], names, "test", device)[0].sub_(mean)
    yt = torch.from_numpy(np.stack([codes(p.test) for p in batch])).to(device)
    w = theta[..., :-1] * inv_std.float().unsqueeze(1)
    logits = torch.baddbmm((theta[..., -1] + mask).unsqueeze(1), xt, w.transpose(1, 2))
    acc[:, 1] = (logits.argmax(-1) == yt).double().mean(1).cpu().numpy()
    return acc, n_iter, converged


def classifier_probe(
    train, test, *, C: float = 1.0, standardize: bool = True, tol: float = 1e-4,
    max_iter: int = 500, device: str | torch.device = "auto",
) -> xr.DataArray:  # fmt: skip
    """Train and held-out accuracy of a linear classifier of the label, per layer.

    For each layer, a multinomial logistic regression with an L2 penalty is fitted to the
    train stimuli's ``label``; its accuracy is reported on the train and the test stimuli.
    With features ``x`` (standardised, see below), the fitted ``W [K, d]`` and ``b [K]``
    minimise, over the ``n`` train stimuli,

        (1/n) Σ_i −log softmax(W x_i + b)[y_i]  +  ||W||² / (2 C n)

    which is ``1 / (C n)`` times the objective of ``sklearn.linear_model.LogisticRegression(C=C)``
    (``C Σ_i CE_i + ||W||²/2``, intercept unpenalised), so it has the same minimiser. For
    two classes scikit-learn fits one binary model; so does this (see the source).
    Classes are the train labels; a test stimulus of another class counts as an error.

    Parameters
    ----------
    train, test
        Activations trees, as :func:`repsim.store.open_activations` returns (run nodes
        holding layer nodes) or :func:`repsim.extract.extract` for one run (run ``""``).
        They must hold the same runs and layers, each layer ``(stimulus, unit)`` with a
        ``label`` coordinate.
    C
        Inverse regularisation strength, exactly as scikit-learn's; ``inf`` for none.
    standardize
        Scale each unit to zero mean and unit variance over the train stimuli first (the
        test stimuli with the train statistics), as ``StandardScaler`` does.
    tol, max_iter
        A layer stops when the largest entry of its objective's gradient is at most
        ``tol`` (scikit-learn's, and scipy's ``gtol``), or when an iteration lowers the
        objective by less than 2.2e-9 of it (L-BFGS-B's default ``ftol``: in float32, the
        gradient stops shrinking below about 1e-5). After ``max_iter`` L-BFGS iterations,
        or when no step lowers the objective, a RuntimeWarning names the layers that did
        not converge.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    xarray.DataArray
        ``probe_accuracy``, float64 in [0, 1], dims ``(run, layer, split)``, ``split`` =
        ``["train", "test"]``; NaN for a layer that a run does not have.

    Notes
    -----
    Layers of equal width (and equal stimulus counts) are stacked and fitted together by
    one batched L-BFGS (history 10, Armijo backtracking), preconditioned per layer with
    the inverse of ``XᵀX/(nK) + λ`` — the Hessian at the origin up to the softmax's
    coupling of classes — so that layers with strongly correlated units converge in tens
    of iterations rather than hundreds.

    Examples
    --------
    >>> import torch
    >>> from repsim.extract import extract
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> x, y = torch.randn(60, 4), torch.arange(60) % 3
    >>> tr = extract(net, x[:40], ["0", "1"], labels=y[:40], device="cpu")
    >>> te = extract(net, x[40:], ["0", "1"], labels=y[40:], device="cpu")
    >>> classifier_probe(tr, te, device="cpu").sizes
    Frozen({'run': 1, 'layer': 2, 'split': 2})
    """
    if not (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0):
        raise ValueError(f"C must be a positive number (inf for no penalty), got {C!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    runs, layers, pairs = _pairs(train, test)
    classes = _labels(pairs)
    dev = resolve_device(device)
    out = np.full((len(runs), len(layers), len(SPLITS)), np.nan)
    late = []
    for batch in _batches(pairs):
        acc, _, converged = _fit_classifier(
            batch, classes, float(C), standardize, float(tol), max_iter, dev
        )
        for p, a, ok in zip(batch, acc, converged, strict=True):
            out[p.run, p.layer] = a
            if not ok:
                late.append(p.name)
    if late:
        warnings.warn(
            f"the classifier probe of {', '.join(late)} did not converge within "
            f"max_iter={max_iter} iterations to tol={tol} (or no step lowered its objective any "
            "more): raise max_iter or tol, lower C, or keep standardize=True",
            RuntimeWarning,
            stacklevel=2,
        )
    attrs = {"C": float(C), "standardize": bool(standardize), "tol": float(tol),
             "max_iter": max_iter, "classes": classes.tolist()}  # fmt: skip
    return _result(out, runs, layers, "probe_accuracy", attrs)


# ---------------------------------------------------------------- regressor


def _inputs(inputs, split: str, pairs: list[_Pair]) -> np.ndarray:
    """``[n, pixels]`` float32 from a tensor, array or DataArray, checked against the trees."""
    import xarray as xr

    index = None
    if isinstance(inputs, xr.DataArray):
        if STIMULUS in inputs.dims:
            inputs = inputs.transpose(STIMULUS, ...)
        if INDEX in inputs.coords and inputs.coords[INDEX].dims == (inputs.dims[0],):
            index = np.asarray(inputs.coords[INDEX].values)
        inputs = inputs.values
    elif isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(
            f"{split}_inputs must be [stimuli, pixels...] (one row per stimulus), got shape {x.shape}"
        )
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise ValueError(f"{split}_inputs contain NaN or inf")
    for p in pairs:
        acts = getattr(p, split)
        if acts.sizes[STIMULUS] != len(x):
            raise ValueError(
                f"{split}_inputs hold {len(x)} stimuli but the {split} activations of {p.name} "
                f"hold {acts.sizes[STIMULUS]}: pass the inputs the activations were extracted from, "
                "in the same order"
            )
        if (
            index is not None
            and INDEX in acts.coords
            and not np.array_equal(index, np.asarray(acts.coords[INDEX].values))
        ):
            raise ValueError(
                f"{split}_inputs are other stimuli, or in another order, than the {split} "
                f"activations of {p.name} (their 'index' coordinates differ)"
            )
    return x


def _sq_error(x: torch.Tensor, w: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``Σ (x w + offset)²`` per layer, float64 ``[L]``, a bounded block of rows at a time."""
    rows = max(1, _PRED_BYTES // (4 * x.shape[0] * w.shape[-1]))
    sq = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[1], rows):
        err = torch.baddbmm(offset[s : s + rows], x[:, s : s + rows], w)
        sq += torch.linalg.vector_norm(err.flatten(1), dim=1).double() ** 2
    return sq


def _fit_regressor(batch, y, y_test, alpha, standardize, device):
    """Train and test mean squared error ``[L, 2]`` of one batch of layers."""
    names = [p.name for p in batch]
    x, mean = _stack([p.train for p in batch], names, "train", device)
    x.sub_(mean)  # centred: the intercept is not penalised
    n_layers, n = x.shape[:2]
    gram = _gram(x)
    inv_std = _inv_std(gram, mean, n, standardize)
    scale = inv_std.float().unsqueeze(1)
    y_mean = y.mean(0, keepdim=True)
    yc = y - y_mean
    cross_t = torch.matmul(yc.T, x).mul_(scale)  # (Xsᵀ Yc)ᵀ [L, pixels, d]
    a = gram.double().mul_(inv_std.unsqueeze(-1) * inv_std.unsqueeze(-2))
    del gram
    a.diagonal(dim1=-2, dim2=-1).add_(alpha)
    chol, info = torch.linalg.cholesky_ex(a)  # float64: it must not break down
    if (info > 0).any():
        bad = [names[i] for i in torch.nonzero(info > 0).flatten().tolist()]
        raise ValueError(
            f"the ridge system of {', '.join(bad)} is singular (units that are linearly "
            f"dependent, or fewer stimuli than units) with alpha={alpha}: use alpha > 0"
        )
    # The triangular solves are backward stable: in float32 they perturb XsᵀXs by about
    # as much as its float32 product did, and run at twice the speed.
    coef_t = torch.cholesky_solve(cross_t.mT, chol.float()).mT  # Bᵀ [L, pixels, d]
    # |Yc − Xs B|² = |Yc|² − 2 tr(BᵀXsᵀYc) + tr(BᵀXsᵀXs B), and (XsᵀXs + α) B = XsᵀYc
    total = torch.linalg.vector_norm(yc, dtype=torch.float64) ** 2
    explained = torch.linalg.vecdot(coef_t.flatten(1), cross_t.flatten(1)).double()
    penalty = torch.linalg.vector_norm(coef_t.flatten(1), dim=1).double() ** 2
    sse = total - explained - alpha * penalty
    del cross_t
    w = coef_t.mul_(scale).mT  # B for the centred, unscaled units [L, d, pixels]
    # That difference keeps float32's ~1e-7 of |Yc|²: where the fit explains more than 99 %
    # of it, compute the residuals outright instead.
    close = sse < 0.01 * total
    if close.any():
        sse[close] = _sq_error(x[close], w[close], yc.neg())
    del x
    mse = np.empty((n_layers, 2))
    mse[:, 0] = (sse.clamp_min(0) / yc.numel()).cpu().numpy()

    xt = _stack([p.test for p in batch], names, "test", device)[0].sub_(mean)
    mse[:, 1] = (_sq_error(xt, w, y_mean - y_test) / y_test.numel()).cpu().numpy()
    return mse


def regressor_probe(
    train, test, train_inputs, test_inputs, *, alpha: float = 1.0, standardize: bool = True,
    device: str | torch.device = "auto",
) -> xr.DataArray:  # fmt: skip
    """Train and held-out error of a linear map from each layer back to the network's input.

    For each layer, ridge regression with an intercept is fitted from the train
    activations ``X [n, d]`` (standardised, see below) to the train inputs ``Y [n, p]``:
    ``B`` minimises ``||Y − X B − 1 bᵀ||² + alpha ||B||²`` (the intercept unpenalised),
    exactly ``sklearn.linear_model.Ridge(alpha=alpha)``, solved in closed form.

    Parameters
    ----------
    train, test
        Activations trees, as for :func:`classifier_probe` (labels are not needed).
    train_inputs, test_inputs
        The stimuli the activations were extracted from, in the same order: tensors,
        arrays or DataArrays ``[n_stimuli, ...]`` (flattened per stimulus to ``[n, p]``).
        A DataArray with an ``index`` coordinate is checked against the trees' ``index``.
    alpha
        Ridge penalty, exactly as scikit-learn's ``Ridge``; 0 for least squares.
    standardize
        Scale each unit to zero mean and unit variance over the train stimuli first, as
        ``StandardScaler`` does (a constant unit is left unscaled).
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    xarray.DataArray
        ``probe_mse``, float64, dims ``(run, layer, split)``: the mean over stimuli and
        input elements of the squared error, on the train and the test stimuli; NaN for a
        layer that a run does not have.

    Notes
    -----
    Layers of equal width (and stimulus counts) are solved together: float32 Gram
    matrices ``XᵀX`` and ``XᵀY`` by batched matrix products, a float64 Cholesky
    factorisation of ``XᵀX + alpha I`` (it must not break down on correlated units), float32
    triangular solves. The train error comes from those products
    (``|Y|² − tr(BᵀXᵀY) − alpha |B|²``) without predicting the train stimuli, except
    where the fit explains more than 99 % of the inputs' variance, when float32 rounding
    would show and the residuals are computed outright; the test error from predictions.
    A unit nearly silent on the train stimuli gets a large scale when standardised, and
    may then predict the test stimuli badly (as it would in scikit-learn): a larger
    ``alpha`` tempers it.

    Examples
    --------
    >>> import torch
    >>> from repsim.extract import extract
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> x = torch.randn(60, 4)
    >>> tr = extract(net, x[:40], ["0", "1"], device="cpu")
    >>> te = extract(net, x[40:], ["0", "1"], device="cpu")
    >>> mse = regressor_probe(tr, te, x[:40], x[40:], device="cpu")
    >>> mse.dims, float(mse.sel(run="", layer="0", split="train")) < 0.01  # "0" is linear in x
    (('run', 'layer', 'split'), True)
    """
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha >= 0):
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha!r}")
    runs, layers, pairs = _pairs(train, test)
    y = _inputs(train_inputs, "train", pairs)
    y_test = _inputs(test_inputs, "test", pairs)
    if y.shape[1] != y_test.shape[1]:
        raise ValueError(
            f"train_inputs have {y.shape[1]} elements per stimulus but test_inputs {y_test.shape[1]}"
        )
    dev = resolve_device(device)
    y, y_test = torch.from_numpy(y).to(dev), torch.from_numpy(y_test).to(dev)
    out = np.full((len(runs), len(layers), len(SPLITS)), np.nan)
    for batch in _batches(pairs):
        mse = _fit_regressor(batch, y, y_test, float(alpha), standardize, dev)
        for p, m in zip(batch, mse, strict=True):
            out[p.run, p.layer] = m
    attrs = {"alpha": float(alpha), "standardize": bool(standardize)}
    return _result(out, runs, layers, "probe_mse", attrs)


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

    Parameters
    ----------
    runs
        :class:`repsim.runs.Run` objects (:func:`repsim.runs.discover`, ...).
    train_stimuli, test_stimuli
        ``<dataset>:<split>:<n|all>`` that the probes are fitted on and tested on;
        ``{dataset}`` stands for the runs' dataset, which must then be the same for all.
        Each selection is loaded once.
    C, alpha
        As for :func:`classifier_probe` and :func:`regressor_probe`.
    cache
        A directory to keep the activations in (``probes-train.zarr``,
        ``probes-test.zarr``; up-to-date runs are reused); None extracts them in memory.
    extraction
        Other keywords of :func:`repsim.extract.extract_runs` (``batch_size``, ``force``,
        ``progress``, ``on_error``, ``log``).

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.probes``: classifier and regressor probes of every run, stored and plotted."""
    return cli.main(COMMAND, argv)


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
    computed = analyse(
        runs,
        train_stimuli=args.train_stimuli,
        test_stimuli=args.test_stimuli,
        C=args.C,
        alpha=args.alpha,
        device=args.device,
        cache=context.base,
        **context.extraction(),
    )
    results = context.save(computed)
    accuracy, mse = results["probe_accuracy"], results["probe_mse"]
    fig = context.figure(plots.probe_curves(accuracy, mse), "probes")

    def cell(run: str, i: int) -> str:
        a = float(accuracy.sel({RUN: run, SPLIT: "test"})[i])
        return f"{a:.3f} / {float(mse.sel({RUN: run, SPLIT: 'test'})[i]):.4f}"

    cli.layer_table(
        f"held-out probe accuracy / MSE (fitted on {accuracy.attrs['train_stimuli']}, tested on {accuracy.attrs['test_stimuli']})",
        [str(r) for r in accuracy[RUN].values],
        [str(v) for v in accuracy[LAYER].values],
        cell,
        width=16,
    )
    print(f"\n→ {context.store} (probe_accuracy, probe_mse), {fig}")


#: ``--stimuli`` is not among its options: the probes' stimuli are ``--train-stimuli``
#: and ``--test-stimuli``.
COMMAND = cli.Command(
    "probes",
    "Linear classifier and regressor probes per layer.",
    _command,
    _add_arguments,
    stimuli=False,
)


if __name__ == "__main__":
    sys.exit(main())
