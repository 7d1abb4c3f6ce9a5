"""The classifier probe: multinomial logistic regression of the label from each layer,
fitted by batched L-BFGS (:func:`repsim.probes.classifier_probe`)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from repsim import _probe_common as common
from repsim._lbfgs import lbfgs
from repsim.devices import resolve_device
from repsim.names import LABEL, SPLITS, STIMULUS

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["classifier_probe"]


def _labels(pairs: list[common.Pair]) -> np.ndarray:
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
    x, mean = common.stack([p.train for p in batch], names, "train", device)
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

    gram = common.gram(x)
    inv_std = common.inv_std(gram, mean, n, standardize)
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
    xt = common.stack([p.test for p in batch], names, "test", device)[0].sub_(mean)
    yt = torch.from_numpy(np.stack([codes(p.test) for p in batch])).to(device)
    w = theta[..., :-1] * inv_std.float().unsqueeze(1)
    logits = torch.baddbmm((theta[..., -1] + mask).unsqueeze(1), xt, w.transpose(1, 2))
    acc[:, 1] = (logits.argmax(-1) == yt).double().mean(1).cpu().numpy()
    return acc, n_iter, converged


def classifier_probe(
    train,
    test,
    *,
    C: float = 1.0,
    standardize: bool = True,
    tol: float = 1e-4,
    max_iter: int = 500,
    device: str | torch.device = "auto",
) -> xr.DataArray:
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
    runs, layers, pairs = common.pairs(train, test)
    classes = _labels(pairs)
    dev = resolve_device(device)
    out = np.full((len(runs), len(layers), len(SPLITS)), np.nan)
    late = []
    for batch in common.batches(pairs):
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
    attrs = {
        "C": float(C),
        "standardize": bool(standardize),
        "tol": float(tol),
        "max_iter": max_iter,
        "classes": classes.tolist(),
    }
    return common.result(out, runs, layers, "probe_accuracy", attrs)
