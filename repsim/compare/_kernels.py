"""Array kernels of the comparison measures: stacks of layers in, a matrix of scores out.

Every function takes layers stacked on a leading dim (``m`` layers, ``n`` stimuli) and
returns the ``(m_a, m_b)`` matrix of scores of every layer of one stack against every
layer of the other. Private: :mod:`repsim.compare.measures` wraps them for xarray objects.
"""

from __future__ import annotations

import numpy as np
import torch

# ----------------------------------------------------------------------- RSA


def upper(rdms: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The strict upper triangles of ``(m, n, n)`` RDMs as ``(m, p)`` vectors, float64;
    ``keep`` (``(n, n)`` bool) drops more entries (a bootstrap's repeated stimuli)."""
    n = rdms.shape[-1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=rdms.device), diagonal=1)
    if keep is not None:
        mask &= keep
    return rdms[:, mask].to(torch.float64)


def rank_rows(v: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) of each row's entries, ties given their average rank, as
    ``scipy.stats.rankdata(method="average")``."""
    m, p = v.shape
    ordered, order = torch.sort(v, dim=1, stable=True)
    position = torch.arange(1, p + 1, dtype=torch.float64, device=v.device).expand(m, p)
    ties = ordered[:, 1:] == ordered[:, :-1]
    if bool(ties.any()):  # average each tie group's positions (rare for float RDMs)
        starts = torch.ones_like(ordered, dtype=torch.bool)
        starts[:, 1:] = ~ties
        group = torch.cumsum(starts, dim=1) - 1
        mean = torch.zeros(m, p, dtype=torch.float64, device=v.device)
        mean = mean.scatter_reduce(1, group, position, reduce="mean", include_self=False)
        position = torch.gather(mean, 1, group)
    ranks = torch.empty(m, p, dtype=torch.float64, device=v.device)
    return ranks.scatter_(1, order, position)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; an all-zero row becomes NaN (its score is undefined)."""
    norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    return v / torch.where(norm > 0, norm, torch.nan)


def rsa_embed(v: torch.Tensor, method: str) -> torch.Tensor:
    """Vectors whose dot products are the RSA scores (every method but ``tau-a``)."""
    if method in ("spearman", "rho-a"):
        v = rank_rows(v)
    if method == "cosine":
        return _unit(v)
    v = v - v.mean(dim=1, keepdim=True)
    if method == "rho-a":  # Spearman's formula without the tie correction (rsatoolbox)
        p = v.shape[1]
        return v * np.sqrt(12.0 / (p**3 - p))
    return _unit(v)


def tau_a(va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-a of every row of ``va`` against every row of ``vb``.

    ``(concordant − discordant) / (p (p − 1) / 2)``, ties counting as neither; from
    scipy's O(p log p) tau-b, whose denominator is undone with the tie counts.
    """
    from scipy.stats import kendalltau

    a, b = va.cpu().numpy(), vb.cpu().numpy()
    p = a.shape[1]
    total = p * (p - 1) / 2

    def ties(row: np.ndarray) -> float:
        _, counts = np.unique(row, return_counts=True)
        return float((counts * (counts - 1) / 2).sum())

    tie_a, tie_b = [ties(r) for r in a], [ties(r) for r in b]
    out = np.zeros((len(a), len(b)))
    for i, ra in enumerate(a):
        for j, rb in enumerate(b):
            if tie_a[i] == total or tie_b[j] == total:
                continue  # a constant vector: no pair is concordant or discordant
            tau_b = kendalltau(ra, rb, variant="b").statistic
            out[i, j] = tau_b * np.sqrt((total - tie_a[i]) * (total - tie_b[j])) / total
    return torch.as_tensor(np.clip(out, -1.0, 1.0), device=va.device)


def rsa(va: torch.Tensor, vb: torch.Tensor, method: str) -> torch.Tensor:
    """RSA scores of every RDM vector of ``va`` against every one of ``vb``."""
    if method == "tau-a":
        return tau_a(va, vb)
    return (rsa_embed(va, method) @ rsa_embed(vb, method).T).clamp(-1.0, 1.0)


# ----------------------------------------------------------------------- CKA


def center_features(x: torch.Tensor) -> torch.Tensor:
    """Each unit's mean over stimuli removed (``(m, n, d)``)."""
    return x - x.mean(dim=-2, keepdim=True)


def rbf_gram(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian kernel ``exp(−‖x_i − x_j‖² / (2 (σ·median distance)²))`` per layer, with
    the median over all ``n²`` squared distances (Kornblith et al. 2019's code)."""
    x = x.to(torch.float64)
    sq = (x * x).sum(-1)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(-1, -2)).clamp_min(0)
    flat = d2.flatten(1)
    k = flat.shape[1]  # numpy's median: the mean of the two middle values when k is even
    lower = flat.kthvalue((k + 1) // 2, dim=1).values
    upper = flat.kthvalue(k // 2 + 1, dim=1).values
    median = (lower + upper) / 2
    return torch.exp(-d2 / (2 * sigma**2 * median.clamp_min(1e-300))[:, None, None])


def linear_gram(x: torch.Tensor) -> torch.Tensor:
    """``X_c X_cᵀ`` per layer, features centred (so the Gram is already double-centred)."""
    xc = center_features(x)
    return xc @ xc.transpose(-1, -2)


def center_gram(k: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """``H K H`` (biased HSIC), or the U-centred Gram (unbiased HSIC, Song et al. 2012):
    zero diagonal, ``K̃_ij − K̃_i·/(n−2) − K̃_·j/(n−2) + K̃_··/((n−1)(n−2))``, whose
    inner products are ``n (n − 3)`` times the unbiased HSIC. float64 stays float64;
    anything else is done in float32."""
    if k.dtype != torch.float64:
        k = k.to(torch.float32)
    n = k.shape[-1]
    if not unbiased:
        k = k - k.mean(dim=-1, keepdim=True)
        return k.sub_(k.mean(dim=-2, keepdim=True))
    k = k.clone()  # one copy; the rest in place
    k.diagonal(dim1=-2, dim2=-1).zero_()
    means = k.sum(dim=-2) / (n - 2)
    means -= means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
    k.sub_(means[..., :, None]).sub_(means[..., None, :])
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def cka_from_grams(ka: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """CKA of every centred Gram of ``ka`` against every one of ``kb`` (``(m, n, n)``)."""
    fa, fb = ka.flatten(1), kb.flatten(1)
    return _normalise(fa @ fb.T, (fa * fa).sum(1), (fb * fb).sum(1))


def _normalise(inner: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor) -> torch.Tensor:
    """``inner / sqrt(sq_a sq_b)``, NaN where either is 0: ``x / sqrt(x·x)`` is exactly 1."""
    denom = torch.sqrt(sq_a[:, None] * sq_b[None, :])
    return inner / torch.where(denom > 0, denom, torch.nan)


def linear_cka_blocked(xs: list[torch.Tensor], unbiased: bool, budget: int) -> torch.Tensor:
    """Linear CKA of every pair of layers ``xs`` (each ``(n, d_k)``, widths may differ),
    ``(m, m)``, without holding all ``n × n`` Grams: the centred (or U-centred) Grams are
    built ``r`` rows at a time into one buffer, and their inner products accumulated.

    Centred features make the Gram double-centred, and its column sums ``-K_jj`` once the
    diagonal is zeroed, so U-centring needs only the diagonal.
    """
    both = [center_features(x.to(torch.float32)) for x in xs]
    n, m = both[0].shape[0], len(both)
    means = []
    for x in both:
        mu = -(x * x).sum(-1).to(torch.float64) / (n - 2)
        means.append((mu - mu.sum() / (2 * (n - 1))).to(torch.float32))
    rows = max(1, min(n, budget // max(1, 4 * m * n)))
    buf = torch.empty(m, rows * n, dtype=torch.float32, device=both[0].device)
    inner = torch.zeros(m, m, dtype=torch.float64, device=both[0].device)
    for s in range(0, n, rows):
        r = min(rows, n - s)
        for t, (x, mu) in enumerate(zip(both, means, strict=True)):
            g = buf[t, : r * n].view(r, n)
            torch.mm(x[s : s + r], x.T, out=g)
            if unbiased:
                g -= mu[s : s + r, None]
                g -= mu[None, :]
                g.diagonal(offset=s).zero_()
        f = buf[:, : r * n]
        inner += (f @ f.T).to(torch.float64)
    sq = torch.diagonal(inner)
    return _normalise(inner, sq, sq)


def linear_cka_features(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Biased linear CKA in feature space (Kornblith et al. 2019, eq. 5), one pair:
    ``‖Y_cᵀ X_c‖²_F / (‖X_cᵀ X_c‖_F ‖Y_cᵀ Y_c‖_F)``."""
    xa, xb = center_features(xa.to(torch.float64)), center_features(xb.to(torch.float64))
    num = torch.linalg.matrix_norm(xb.T @ xa) ** 2
    return num / (torch.linalg.matrix_norm(xa.T @ xa) * torch.linalg.matrix_norm(xb.T @ xb))


# ----------------------------------------------------------------------- shape


def whiten(x: torch.Tensor, alpha: float, tol: float = 1e-7) -> torch.Tensor:
    """Centre, partially whiten and scale to unit Frobenius norm, as netrep's
    ``LinearMetric(alpha, center_columns=True, score_method="angular")`` does: the
    covariance ``X_cᵀX_c`` is mixed with the identity, ``Z = α I + (1 − α) C^{-1/2}``,
    rescaled so the total variance is unchanged (``α = 1``: no whitening, Procrustes;
    ``α = 0``: full whitening, CCA)."""
    x = center_features(x.to(torch.float64))
    if alpha < 1 - tol:
        lam, v = torch.linalg.eigh(x.T @ x)
        lam = lam.clamp_min(tol)
        d = alpha + (1 - alpha) * lam**-0.5
        new_var = torch.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * lam**0.5 + (1 - alpha) ** 2)
        d = d * torch.sqrt(lam.sum() / new_var)
        x = x @ ((v * d) @ v.T)
    norm = torch.linalg.matrix_norm(x)
    return x / torch.where(norm > 0, norm, torch.nan)


def reduce(x: torch.Tensor) -> torch.Tensor:
    """``U S`` of ``x``'s thin SVD (``n × min(n, d)``): the same nuclear norms of ``xᵀy``,
    in fewer dims."""
    if not torch.isfinite(x).all():  # a dead layer (NaN after whitening): left NaN
        return x
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    return u * s


def shape_angles(pa: list[torch.Tensor], pb: list[torch.Tensor]) -> torch.Tensor:
    """Angular shape distance ``arccos ‖Xᵀ Y‖_*`` of every prepared (whitened, unit-norm,
    reduced) layer of ``pa`` against every one of ``pb``: the angle left after the best
    rotation of one onto the other (Williams et al. 2021)."""
    out = torch.empty(len(pa), len(pb), dtype=torch.float64, device=pa[0].device)
    for i, a in enumerate(pa):
        for j, b in enumerate(pb):
            product = a.T @ b
            if not torch.isfinite(product).all():
                out[i, j] = torch.nan
                continue
            nuclear = torch.linalg.svdvals(product).sum()
            out[i, j] = torch.arccos(nuclear.clamp(-1.0, 1.0))
    return out
