"""The batched L-BFGS solver on problems with known minimisers, against numpy."""

from typing import NamedTuple

import numpy as np
import pytest
import torch

from repsim._lbfgs import lbfgs


class _LeastSquares(NamedTuple):
    a: torch.Tensor  # [L, m, d]
    b: torch.Tensor  # [L, m, K]


def _fun(data: _LeastSquares, theta: torch.Tensor):
    """f = |A Θᵀ − B|² / 2m per objective, Θ [L, K, d]."""
    r = torch.bmm(data.a, theta.transpose(1, 2)) - data.b
    m = data.a.shape[1]
    f = (r.double() ** 2).sum((1, 2)) / (2 * m)
    return f, torch.bmm(r.transpose(1, 2), data.a) / m


def _identity(data: _LeastSquares, g: torch.Tensor) -> torch.Tensor:
    return g.clone()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_objective_reaches_its_own_least_squares_solution(seed):
    gen = torch.Generator().manual_seed(seed)
    n, m, d, k = 7, 40, 5, 3
    scales = torch.logspace(-1, 1, n)[:, None, None]  # some stop early: the batch compacts
    a = torch.randn(n, m, d, generator=gen) * scales
    b = torch.randn(n, m, k, generator=gen)
    data = _LeastSquares(a, b)
    theta, n_iter, converged = lbfgs(
        _fun, _identity, data, torch.zeros(n, k, d), tol=1e-6, max_iter=500
    )
    assert converged.all() and (n_iter > 0).all()
    want = torch.stack(
        [
            torch.from_numpy(np.linalg.lstsq(a[i].numpy(), b[i].numpy(), rcond=None)[0].T)
            for i in range(n)
        ]
    )
    np.testing.assert_allclose(theta.numpy(), want.numpy(), atol=2e-3)
    f, f_min = _fun(data, theta)[0], _fun(data, want)[0]
    assert (f <= f_min * (1 + 1e-5)).all()


def test_max_iter_stops_without_convergence():
    gen = torch.Generator().manual_seed(0)
    data = _LeastSquares(torch.randn(2, 30, 6, generator=gen), torch.randn(2, 30, 2, generator=gen))
    result = lbfgs(_fun, _identity, data, torch.zeros(2, 2, 6), tol=0.0, max_iter=2)
    assert result.n_iter.tolist() == [2, 2] and not result.converged.any()
