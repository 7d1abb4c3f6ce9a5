"""The regressor probe: ridge regression from each layer back to the network's input,
solved in closed form by batched Cholesky (:func:`repsim.probes.regressor_probe`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from repsim import _probe_common as common
from repsim.devices import resolve_device
from repsim.names import INDEX, SPLITS, STIMULUS

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["regressor_probe"]

_PRED_BYTES = 1 << 28  # test predictions of the regressor held at once


def _inputs(inputs, split: str, pairs: list[common.Pair]) -> np.ndarray:
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
    x, mean = common.stack([p.train for p in batch], names, "train", device)
    x.sub_(mean)  # centred: the intercept is not penalised
    n_layers, n = x.shape[:2]
    gram = common.gram(x)
    inv_std = common.inv_std(gram, mean, n, standardize)
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

    xt = common.stack([p.test for p in batch], names, "test", device)[0].sub_(mean)
    mse[:, 1] = (_sq_error(xt, w, y_mean - y_test) / y_test.numel()).cpu().numpy()
    return mse


def regressor_probe(
    train,
    test,
    train_inputs,
    test_inputs,
    *,
    alpha: float = 1.0,
    standardize: bool = True,
    device: str | torch.device = "auto",
) -> xr.DataArray:
    """Train and held-out error of a linear map from each layer back to the network's input.

    For each layer, ridge regression with an intercept is fitted from the train
    activations ``X [n, d]`` (standardised, see below) to the train inputs ``Y [n, p]``:
    ``B`` minimises ``||Y − X B − 1 bᵀ||² + alpha ||B||²`` (the intercept unpenalised),
    exactly ``sklearn.linear_model.Ridge(alpha=alpha)``, solved in closed form.

    Parameters
    ----------
    train, test
        Activations trees, as for :func:`repsim.probes.classifier_probe` (labels are not needed).
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
    runs, layers, pairs = common.pairs(train, test)
    y = _inputs(train_inputs, "train", pairs)
    y_test = _inputs(test_inputs, "test", pairs)
    if y.shape[1] != y_test.shape[1]:
        raise ValueError(
            f"train_inputs have {y.shape[1]} elements per stimulus but test_inputs {y_test.shape[1]}"
        )
    dev = resolve_device(device)
    y, y_test = torch.from_numpy(y).to(dev), torch.from_numpy(y_test).to(dev)
    out = np.full((len(runs), len(layers), len(SPLITS)), np.nan)
    for batch in common.batches(pairs):
        mse = _fit_regressor(batch, y, y_test, float(alpha), standardize, dev)
        for p, m in zip(batch, mse, strict=True):
            out[p.run, p.layer] = m
    attrs = {"alpha": float(alpha), "standardize": bool(standardize)}
    return common.result(out, runs, layers, "probe_mse", attrs)
