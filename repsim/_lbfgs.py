"""Batched L-BFGS: minimise ``L`` independent objectives at once, with a preconditioner.

The classifier probes fit one logistic regression per layer; layers of one width are
stacked and solved together here. The problem's data is a NamedTuple of tensors, each with
the ``L`` objectives on its first dim, so that the solver can drop the objectives that
have stopped from every tensor at once (:func:`_rows`) without knowing what they hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
import torch

__all__ = ["FTOL", "MEMORY", "Result", "lbfgs"]

MEMORY = 10  # history length: scipy's default, which scikit-learn uses
_ARMIJO = 1e-4
#: Stop when an iteration lowers f by less than this fraction of it: L-BFGS-B's default
#: (factr 1e7 × float64 eps), and about where a float32 objective stops resolving steps.
FTOL = 1e7 * float(np.finfo(np.float64).eps)

Data = TypeVar("Data", bound=tuple)  # a NamedTuple of tensors [L, ...]
#: ``fun(data, theta) -> (f [L] float64, grad like theta, ...)``
Objective = Callable[..., tuple[torch.Tensor, ...]]
#: ``precond(data, g) -> g'``: an approximate inverse Hessian applied to ``g``
Preconditioner = Callable[..., torch.Tensor]


class Result(NamedTuple):
    """The solution ``theta [L, ...]``, and per objective its iterations and whether it
    converged (``[L]`` numpy arrays)."""

    theta: torch.Tensor
    n_iter: np.ndarray
    converged: np.ndarray


class _History(NamedTuple):
    """The last ``MEMORY`` steps ``s``, gradient changes ``y`` and ``rho = 1 / s·y``, oldest
    first; a slot with ``rho = 0`` is a no-op for that objective."""

    s: list[torch.Tensor]
    y: list[torch.Tensor]
    rho: list[torch.Tensor]

    def rows(self, keep: torch.Tensor) -> _History:
        return _History(*([t[keep] for t in ts] for ts in self))

    def push(self, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor) -> None:
        for ts, t in zip(self, (s, y, rho), strict=True):
            ts.append(t)
            if len(ts) > MEMORY:
                ts.pop(0)


def _rows(data: Data, keep: torch.Tensor) -> Data:
    """The problem restricted to the objectives selected by the boolean mask ``keep``."""
    return data._make(t[keep] for t in data)  # type: ignore[attr-defined]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-objective inner product ``[L]`` in float64."""
    return (a * b).flatten(1).sum(1, dtype=torch.float64)


def _per_row(v: torch.Tensor) -> torch.Tensor:
    """A per-objective ``[L]`` scalar, shaped to scale ``[L, K, d]`` tensors."""
    return v.float()[:, None, None]


def _direction(
    precond: Preconditioner,
    data: Data,
    g: torch.Tensor,
    history: _History,
    gamma: torch.Tensor,
    frozen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-loop recursion's descent direction ``d`` and the slope ``g·d`` ``[L]``."""
    q, alphas = g.clone(), []
    for s, y, r in zip(
        reversed(history.s), reversed(history.y), reversed(history.rho), strict=True
    ):
        a = r * _dot(s, q)
        q.sub_(_per_row(a) * y)
        alphas.append(a)
    z = precond(data, q).mul_(_per_row(gamma))
    for s, y, r, a in zip(history.s, history.y, history.rho, reversed(alphas), strict=True):
        z.add_(_per_row(a - r * _dot(y, z)) * s)
    d = z.neg_()
    gd = _dot(g, d)
    uphill = gd >= 0  # rounding broke the model: restart from the preconditioned gradient
    if uphill.any():
        d[uphill] = -precond(_rows(data, uphill), g[uphill])
        gd = _dot(g, d)
        for r in history.rho:
            r[uphill] = 0.0
    d[frozen] = 0.0
    gd[frozen] = 0.0
    return d, gd


def _line_search(
    fun: Objective,
    data: Data,
    theta: torch.Tensor,
    f: torch.Tensor,
    d: torch.Tensor,
    gd: torch.Tensor,
    frozen: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backtracking (Armijo) along ``d`` on the objectives that have not yet decreased
    enough: ``(step, f, grad, ok)`` at the step taken, ``ok`` false where it failed."""
    step = torch.ones_like(gd)
    f_new, g_new = fun(data, theta + d)[:2]
    ok = frozen | (f_new <= f + _ARMIJO * gd)
    for _ in range(20):
        if ok.all():
            break
        bad = ~ok
        dec = f_new[bad] - f[bad] - gd[bad] * step[bad]
        quad = -gd[bad] * step[bad] ** 2 / (2 * dec)  # minimiser of the quadratic model
        t = torch.where(torch.isfinite(quad), quad, 0.5 * step[bad])
        step[bad] = torch.minimum(torch.maximum(t, 0.1 * step[bad]), 0.5 * step[bad])
        trial = theta[bad] + _per_row(step[bad]) * d[bad]
        fb, gb = fun(_rows(data, bad), trial)[:2]
        f_new[bad], g_new[bad] = fb, gb
        ok[bad] = fb <= f[bad] + _ARMIJO * step[bad] * gd[bad]
    return step, f_new, g_new, ok


def lbfgs(
    fun: Objective,
    precond: Preconditioner,
    data: Data,
    theta: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
) -> Result:
    """Minimise ``L`` independent objectives at once by L-BFGS with a preconditioner.

    Parameters
    ----------
    fun
        ``fun(data, theta) -> (f [L] float64, grad like theta, ...)``.
    precond
        ``precond(data, g)``: an approximate inverse Hessian applied to ``g``, per objective.
    data
        A NamedTuple of tensors, each with the ``L`` objectives on its first dim.
    theta
        The starting point ``[L, K, d]``.
    tol, max_iter
        Each objective stops when its gradient's largest entry is at most ``tol``
        (scipy's ``gtol``) or an iteration lowers ``f`` by less than ``FTOL`` of it
        (converged), or when its line search fails or after ``max_iter`` iterations (not
        converged). Objectives that stop are frozen, and removed from the batch once a
        quarter of it has stopped.

    Returns
    -------
    Result
        ``(theta [L, K, d], n_iter [L], converged [L])``.
    """
    n_layers = theta.shape[0]
    out, n_iter = theta.clone(), np.zeros(n_layers, np.int64)
    converged = np.zeros(n_layers, bool)
    index = torch.arange(n_layers)  # the original position of each row still in the batch
    f, g = fun(data, theta)[:2]
    history = _History([], [], [])
    gamma = torch.ones(n_layers, dtype=torch.float64, device=theta.device)
    frozen = torch.zeros(n_layers, dtype=torch.bool, device=theta.device)
    stalled, flat = torch.zeros_like(frozen), torch.zeros_like(frozen)
    for it in range(max_iter + 1):
        small = (g.abs().flatten(1).amax(1) <= tol) | flat
        stop = small | stalled | (it == max_iter)
        new = stop & ~frozen
        if new.any():
            rows = index[new.cpu()]
            out[rows] = theta[new]
            n_iter[rows.numpy()] = it
            converged[rows.numpy()] = small[new].cpu().numpy()
            frozen |= stop
        if frozen.all():
            break
        if frozen.sum() * 4 >= len(frozen):  # compact: drop the stopped objectives
            keep = ~frozen
            index = index[keep.cpu()]
            theta, f, g, gamma = theta[keep], f[keep], g[keep], gamma[keep]
            data, history = _rows(data, keep), history.rows(keep)
            frozen, stalled, flat = frozen[keep], stalled[keep], flat[keep]

        d, gd = _direction(precond, data, g, history, gamma, frozen)
        step, f_new, g_new, ok = _line_search(fun, data, theta, f, d, gd, frozen)
        stalled = ~ok
        step = torch.where(ok, step, 0.0)
        s_new = d * _per_row(step)
        theta = theta + s_new
        y_new = torch.where(ok[:, None, None], g_new - g, 0.0)
        flat = ok & ~frozen & (f - f_new <= FTOL * torch.maximum(f.abs(), torch.ones_like(f)))
        f, g = torch.where(ok, f_new, f), torch.where(ok[:, None, None], g_new, g)

        sy = _dot(s_new, y_new)
        good = sy > 1e-10 * torch.sqrt(_dot(s_new, s_new) * _dot(y_new, y_new))
        history.push(s_new, y_new, torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0))
        yhy = _dot(y_new, precond(data, y_new))
        gamma = torch.where(good & (yhy > 0), sy / torch.where(yhy > 0, yhy, 1.0), gamma)
    return Result(out, n_iter, converged)
