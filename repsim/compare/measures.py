"""How similar is each layer of one network to each layer of another: RSA, CKA, shape metrics.

Three families, each a name as ``--measure`` takes it (``family:variant``):

=====================  ===========  ==========================================  =========================================
measure                range        invariant to                                 not invariant to
=====================  ===========  ==========================================  =========================================
``rsa:corr``           [−1, 1]      anything that keeps each layer's RDM:        a general orthogonal map of the units
                                    unit permutation, isotropic scale, adding    (the correlation RDM centres each
                                    a constant to every unit, rotations that     stimulus over its units); a monotone
                                    keep the all-ones direction                  change of the dissimilarities
``rsa:spearman``       [−1, 1]      as ``corr``, and any monotone change of the
                                    dissimilarities
``rsa:tau-a``          [−1, 1]      as ``spearman`` (ties count as neither
                                    concordant nor discordant)
``rsa:rho-a``          [−1, 1]      as ``spearman`` (no tie correction: ties
                                    lower it)
``rsa:cosine``         [−1, 1]      as ``corr`` but not adding a constant to
                                    the dissimilarities
``cka:linear``         ≈ [0, 1]     orthogonal maps, isotropic scale, unit       invertible linear maps in general
                                    permutation, a constant shift
``cka:linear-biased``  [0, 1]       as ``cka:linear``
``cka:rbf[:σ]``        ≈ [0, 1]     orthogonal maps, unit permutation, a shift;
                                    isotropic scale (σ is a multiple of the
                                    median distance)
``shape:procrustes``   [0, π/2]     orthogonal maps, isotropic scale, unit       invertible linear maps in general
 (distance)                         permutation, a shift
``shape:cca``          [0, π/2]     any invertible linear map (needs more
 (distance)                         stimuli than units)
``shape:<α>``          [0, π/2]     orthogonal maps, unit permutation, a shift   isotropic scale (the partial whitening
 (0 < α < 1)                                                                     mixes the identity with C^-1/2)
=====================  ===========  ==========================================  =========================================

RSA compares the layers' RDMs (1 − Pearson correlation between stimuli, as
:func:`repsim.rdm.rdm`) through their upper triangles, with rsatoolbox's names and
definitions (``corr``, ``spearman``, ``tau-a``, ``rho-a``, ``cosine``), so that a user can
move between the two. CKA is centred kernel alignment (Kornblith et al. 2019):
``cka:linear`` is the default and uses the **unbiased** HSIC estimator (Song et al. 2012),
because the plain (biased) one inflates the score at small ``n``: two independent random
layers of 512 units over 32 stimuli have biased linear CKA ≈ 0.9 and unbiased ≈ 0. The
unbiased score can dip slightly below 0 (or above 1 by rounding); scores are clipped to
[−1, 1]. ``shape`` is the angular shape metric of Williams et al. (2021): centre, partially
whiten with ``α`` (as netrep's ``LinearMetric``), scale to unit norm, and take the angle
left after the best rotation — a true metric (symmetric, 0 on itself, triangle inequality).

A layer whose activations are the same for every stimulus (a dead layer) has no defined
score under any measure: its row and column are NaN and a warning names it (so are those of
a layer whose RDM is constant, under ``rsa:corr`` and ``rsa:spearman``; ``tau-a``,
``rho-a`` and ``cosine`` score it as rsatoolbox does). Non-finite activations are an error.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from repsim.compare import _kernels
from repsim.devices import resolve_device
from repsim.names import INDEX, LABEL, LAYER, RUN, STIMULUS, UNIT

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "MEASURES",
    "RSA_METHODS",
    "Measure",
    "Stack",
    "cka",
    "compare",
    "measure",
    "rsa",
    "shape_distance",
]

#: RSA comparisons of RDM upper triangles, with rsatoolbox's names.
RSA_METHODS: tuple[str, ...] = ("corr", "spearman", "tau-a", "rho-a", "cosine")
#: The measures ``--measure`` names (and ``cka:rbf:<σ>``, ``shape:<α>``).
MEASURES: tuple[str, ...] = (
    *(f"rsa:{m}" for m in RSA_METHODS),
    "cka:linear",
    "cka:linear-biased",
    "cka:rbf",
    "cka:rbf-biased",
    "shape:procrustes",
    "shape:cca",
)
_SHORT = {"rsa": "rsa:spearman", "cka": "cka:linear", "shape": "shape:procrustes"}


@dataclasses.dataclass(frozen=True)
class Measure:
    """One comparison measure: ``family`` (``rsa``, ``cka``, ``shape``), ``method`` (RSA's
    comparison, CKA's kernel, the shape metric's name) and ``param`` (the RBF bandwidth as
    a multiple of the median distance; the shape metric's α)."""

    family: str
    method: str
    param: float | None = None
    unbiased: bool = True

    @property
    def name(self) -> str:
        """The canonical ``--measure`` string."""
        if self.family == "cka":
            base = f"cka:{self.method}" + ("" if self.unbiased else "-biased")
            return base + (f":{self.param:g}" if self.method == "rbf" and self.param != 1.0 else "")
        if self.family == "shape":
            named = {1.0: "procrustes", 0.0: "cca"}
            return f"shape:{named.get(self.param, f'{self.param:g}')}"
        return f"rsa:{self.method}"

    @property
    def slug(self) -> str:
        """The name as a result variable or file name: ``cka_linear``, ``rsa_tau_a``."""
        return self.name.replace(":", "_").replace("-", "_").replace(".", "p")

    @property
    def distance(self) -> bool:
        """True for a distance (lower is more alike), False for a similarity."""
        return self.family == "shape"

    @property
    def best(self):
        """``argmax`` for a similarity, ``argmin`` for a distance (the best-matching layer)."""
        return np.nanargmin if self.distance else np.nanargmax


def measure(spec: str | Measure) -> Measure:
    """Parse a ``--measure`` string: ``rsa[:corr|spearman|tau-a|rho-a|cosine]``,
    ``cka[:linear|linear-biased|rbf|rbf-biased][:σ]``, ``shape[:procrustes|cca|<α>]``.

    Examples
    --------
    >>> measure("cka").name, measure("shape:0.5").param, measure("rsa:tau-a").slug
    ('cka:linear', 0.5, 'rsa_tau_a')
    """
    if isinstance(spec, Measure):
        return spec
    text = _SHORT.get(str(spec).strip(), str(spec).strip())
    family, _, rest = text.partition(":")
    hint = f"expected one of {', '.join(MEASURES)} (or cka:rbf:<σ>, shape:<α> with 0 ≤ α ≤ 1)"
    if family == "rsa" and rest in RSA_METHODS:
        return Measure("rsa", rest)
    if family == "cka":
        kernel, _, sigma = rest.partition(":")
        base = kernel.removesuffix("-biased")
        if base in ("linear", "rbf") and (not sigma or base == "rbf"):
            param = _number(sigma, spec, hint) if sigma else 1.0
            if param is not None and param > 0:
                return Measure("cka", base, param if base == "rbf" else None, kernel == base)
    if family == "shape":
        alpha = {"procrustes": 1.0, "cca": 0.0}.get(rest)
        alpha = alpha if alpha is not None else _number(rest, spec, hint)
        if alpha is not None and 0.0 <= alpha <= 1.0:
            return Measure("shape", "angular", alpha)
    raise ValueError(f"unknown measure {spec!r}: {hint}")


def _number(text: str, spec, hint: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"unknown measure {spec!r}: {hint}") from None


# ----------------------------------------------------------------------- stacks


@dataclasses.dataclass
class Stack:
    """Layers to compare, each an ``(n, d_k)`` activation matrix over the same stimuli.

    ``keys`` name each layer by its coordinates on ``dims`` (``(run, layer)`` for an
    activations tree); ``index`` and ``label`` are the stimuli's coordinates (or None).
    """

    dims: tuple[str, ...]
    keys: list[tuple]
    tensors: list[torch.Tensor]
    index: np.ndarray | None
    label: np.ndarray | None

    @property
    def n(self) -> int:
        return int(self.tensors[0].shape[0])

    @property
    def constant(self) -> np.ndarray:
        """Per layer: True when every stimulus gets the same activations (a dead layer)."""
        return np.array([bool((x == x[:1]).all()) for x in self.tensors])

    def where(self, i: int) -> str:
        return ", ".join(f"{d} {k!r}" for d, k in zip(self.dims, self.keys[i], strict=True))

    def coords(self) -> dict[str, list]:
        """Each dim's values, in order of first appearance."""
        return {d: list(dict.fromkeys(k[i] for k in self.keys)) for i, d in enumerate(self.dims)}


def stack(acts: Any, what: str = "activations") -> Stack:
    """A :class:`Stack` from an activations tree (``(run, layer)`` keys) or a DataArray
    ``(..., stimulus, unit)`` (its leading dims are the keys)."""
    import xarray as xr

    from repsim.store import iter_layers

    if isinstance(acts, Stack):
        return acts
    if isinstance(acts, xr.DataTree):
        items = list(iter_layers(acts))
        if not items:
            raise ValueError(f"the {what} tree holds no layers")
        runs = {run for run, _, _ in items}
        dims = (RUN, LAYER) if runs != {""} else (LAYER,)
        keys = [(run, layer) if dims == (RUN, LAYER) else (layer,) for run, layer, _ in items]
        arrays = [a for _, _, a in items]
    elif isinstance(acts, xr.DataArray) and STIMULUS in acts.dims and UNIT in acts.dims:
        acts = acts.transpose(..., STIMULUS, UNIT)
        dims = tuple(acts.dims[:-2])
        if dims:
            flat = acts.stack(_item=dims)
            keys = [k if isinstance(k, tuple) else (k,) for k in flat["_item"].values.tolist()]
            arrays = [flat.isel(_item=i) for i in range(flat.sizes["_item"])]
        else:  # one layer
            keys, arrays = [()], [acts]
    else:
        raise ValueError(
            f"{what}: expected an activations tree (repsim.extract) or a DataArray with dims "
            f"({STIMULUS!r}, {UNIT!r}), got {type(acts).__name__} {getattr(acts, 'dims', '')}"
        )
    first = arrays[0]
    index = first[INDEX].values if INDEX in first.coords else None
    label = first[LABEL].values if LABEL in first.coords else None
    tensors = []
    for key, a in zip(keys, arrays, strict=True):
        where = ", ".join(f"{d} {k!r}" for d, k in zip(dims, key, strict=True)) or "the layer"
        if a.sizes[STIMULUS] != first.sizes[STIMULUS] or (
            index is not None and not np.array_equal(a[INDEX].values, index)
        ):
            raise ValueError(
                f"{where} was extracted on other stimuli than {keys[0]}: layers can be compared "
                "only over the same stimuli; extract every run with the same --stimuli"
            )
        values = np.asarray(a.values, dtype=np.float32).reshape(a.sizes[STIMULUS], -1)
        if not np.isfinite(values).all():
            raise ValueError(
                f"{where}: the activations hold NaN or inf; a network that diverged cannot be "
                "compared (retrain it with a lower learning rate)"
            )
        tensors.append(torch.from_numpy(values))
    return Stack(dims, keys, tensors, index, label)


def _check_pair(a: Stack, b: Stack) -> None:
    if a.n != b.n or (
        a.index is not None and b.index is not None and not np.array_equal(a.index, b.index)
    ):
        raise ValueError(
            f"the two sides were extracted on other stimuli ({a.n} and {b.n} stimuli, or other "
            "indices): compare layers over the same stimuli"
        )


# ----------------------------------------------------------------------- measures


def stimulus_matrices(
    m: Measure, s: Stack, device: torch.device
) -> torch.Tensor | list[torch.Tensor]:
    """What a measure needs of each layer, indexed by stimulus on every axis it has: the RDMs
    (``rsa``) or the uncentred Grams (``cka``), stacked ``(m, n, n)``; or the activations
    (``shape``), a list (widths differ)."""
    from repsim.rdm import _rdm

    out = []
    for x in s.tensors:
        x = x.to(device)
        if m.family == "rsa":
            out.append(_rdm(x[None], "correlation")[0][0].to(torch.float64))
        elif m.family == "cka" and m.method == "rbf":
            out.append(_kernels.rbf_gram(x[None], m.param)[0])
        elif m.family == "cka":
            out.append(_kernels.linear_gram(x[None])[0])  # float32: the bootstrap's bulk
        else:
            out.append(x.to(torch.float64))
    return out if m.family == "shape" else torch.stack(out)


def resample(
    mats: torch.Tensor | list[torch.Tensor], idx: torch.Tensor
) -> torch.Tensor | list[torch.Tensor]:
    """The stimulus matrices (:func:`stimulus_matrices`) of the stimuli ``idx``."""
    if isinstance(mats, torch.Tensor):
        return mats.index_select(1, idx).index_select(2, idx)
    return [x[idx] for x in mats]


def score(
    m: Measure,
    mats_a: torch.Tensor | list[torch.Tensor],
    mats_b: torch.Tensor | list[torch.Tensor],
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``(m_a, m_b)`` scores from :func:`stimulus_matrices` (possibly resampled);
    ``keep`` (``(n, n)`` bool) leaves out the other entries: for a bootstrap sample, the
    pairs of a stimulus with its own copy, from the RDMs (RSA) or the centred Grams (CKA)."""
    same = mats_b is mats_a
    if m.family == "rsa":
        va = _kernels.upper(mats_a, keep)
        vb = va if same else _kernels.upper(mats_b, keep)
        return _kernels.rsa(va, vb, m.method)
    if m.family == "cka":
        ka = _kernels.center_gram(mats_a, m.unbiased)
        kb = ka if same else _kernels.center_gram(mats_b, m.unbiased)
        if keep is not None:  # a stimulus and its copy: left out, as the diagonal is
            n = ka.shape[-1]
            drop = ~keep & ~torch.eye(n, dtype=torch.bool, device=ka.device)
            ka = ka.masked_fill(drop, 0.0)
            kb = ka if same else kb.masked_fill(drop, 0.0)
        return _kernels.cka_from_grams(ka, kb).clamp(-1.0, 1.0)
    pa = [_kernels.reduce(_kernels.whiten(x, m.param)) for x in mats_a]
    pb = [_kernels.reduce(_kernels.whiten(x, m.param)) for x in mats_b]
    return _kernels.shape_angles(pa, pb)


def _check_shape(m: Measure, s: Stack) -> None:
    if m.family != "shape" or m.param >= 1.0:
        return
    for i, x in enumerate(s.tensors):
        live = int((x.std(dim=0) > 0).sum())
        if live >= s.n:
            raise ValueError(
                f"{s.where(i)}: {m.name} whitens the units' covariance, which needs more "
                f"stimuli than (non-constant) units, got {s.n} stimuli and {live} units; "
                "use more stimuli (--stimuli mnist:test:2000), or shape:procrustes (α = 1)"
            )


def blank(scores: torch.Tensor, a: Stack, b: Stack) -> torch.Tensor:
    """``scores`` with NaN in the rows and columns of constant layers (no score is defined
    for a layer that responds the same to every stimulus, whatever a formula would give)."""
    scores = scores.clone()
    scores[torch.as_tensor(a.constant, device=scores.device)] = torch.nan
    scores[:, torch.as_tensor(b.constant, device=scores.device)] = torch.nan
    return scores


def _warn_degenerate(m: Measure, s: Stack, scores: torch.Tensor, axis: int) -> None:
    bad = torch.isnan(scores).all(dim=1 - axis).cpu().numpy()
    if bad.any():
        names = "; ".join(s.where(i) for i in np.flatnonzero(bad))
        warnings.warn(
            f"{m.name} is undefined for {names}: its activations are the same for every "
            "stimulus (or its RDM is constant), so its scores are NaN",
            stacklevel=4,
        )


def pairwise(m: Measure, a: Stack, b: Stack, device: torch.device) -> torch.Tensor:
    """The ``(m_a, m_b)`` matrix of ``m`` over every layer of ``a`` and of ``b``."""
    _check_pair(a, b)
    _check_shape(m, a)
    _check_shape(m, b)
    if m.family == "cka" and m.method == "linear":  # the n × n Grams are never all held
        from repsim.batching import BATCH_BYTES

        xs = [x.to(device) for x in (a.tensors if b is a else [*a.tensors, *b.tensors])]
        out = _kernels.linear_cka_blocked(xs, m.unbiased, BATCH_BYTES).clamp(-1.0, 1.0)
        if b is not a:
            out = out[: len(a.tensors), len(a.tensors) :]
    else:
        mats_a = stimulus_matrices(m, a, device)
        mats_b = mats_a if b is a else stimulus_matrices(m, b, device)
        out = score(m, mats_a, mats_b)
    out = blank(out, a, b)
    _warn_degenerate(m, a, out, 0)
    if b is not a:
        _warn_degenerate(m, b, out, 1)
    return out


def to_dataarray(
    m: Measure,
    a: Stack,
    b: Stack,
    values: np.ndarray,
    name: str | None = None,
    lead: dict | None = None,
):
    """Scores ``(..., m_a, m_b)`` as a DataArray over ``lead``'s dims (name → coordinate
    values, for the leading axes), ``a``'s dims and ``b``'s suffixed ``_`` (``(run, layer,
    run_, layer_)``); NaN where a run lacks a layer."""
    import xarray as xr

    lead = dict(lead or {})
    ca, cb = a.coords(), b.coords()
    values = np.asarray(values)
    shape = [*values.shape[:-2], *(len(v) for v in ca.values()), *(len(v) for v in cb.values())]
    out = np.full(shape, np.nan, dtype=np.float32 if lead else np.float64)
    ia = [np.array([ca[d].index(k[t]) for k in a.keys])[:, None] for t, d in enumerate(a.dims)]
    ib = [np.array([cb[d].index(k[t]) for k in b.keys])[None, :] for t, d in enumerate(b.dims)]
    if not a.dims:
        values = values[..., 0, :]
        ib = [i[0] for i in ib]
    if not b.dims:
        values = values[..., 0]
        ia = [i[:, 0] for i in ia]
    out[(Ellipsis, *ia, *ib)] = values
    coords = {**lead, **ca, **{f"{d}_": v for d, v in cb.items()}}
    return xr.DataArray(
        out,
        dims=(*lead, *a.dims, *(f"{d}_" for d in b.dims)),
        coords=coords,
        name=name or f"similarity_{m.slug}",
        attrs={"measure": m.name, "kind": "distance" if m.distance else "similarity"},
    )


def compare(
    a: Any, b: Any = None, *, measure: str | Measure = "cka", device: str | torch.device = "auto"
) -> xr.DataArray:
    """Every layer of ``a`` against every layer of ``b`` (default: ``a`` itself).

    Parameters
    ----------
    a, b
        Activations: a tree (:func:`repsim.extract.extract_runs`,
        :func:`repsim.store.open_activations`) or a DataArray ``(..., stimulus, unit)``.
        Both over the same stimuli.
    measure
        A :data:`MEASURES` name (see the module docstring), e.g. ``"cka"``,
        ``"rsa:spearman"``, ``"shape:procrustes"``.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    xarray.DataArray
        ``similarity_<measure>`` with ``a``'s leading dims and ``b``'s suffixed ``_``: for
        trees ``(run, layer, run_, layer_)``; float64. ``attrs["kind"]`` says whether it is
        a similarity or a distance.

    Examples
    --------
    >>> import xarray as xr
    >>> x = xr.DataArray(np.random.rand(3, 50, 8), dims=("layer", "stimulus", "unit"))
    >>> sim = compare(x, measure="cka:linear-biased", device="cpu")
    >>> sim.dims, round(float(sim[0, 0]), 6)
    (('layer', 'layer_'), 1.0)
    """
    m = _measure(measure)
    sa = stack(a, "a")
    sb = sa if b is None else stack(b, "b")
    values = pairwise(m, sa, sb, resolve_device(device)).cpu().numpy()
    return to_dataarray(m, sa, sb, values)


_measure = measure


def rsa(
    a: Any, b: Any = None, *, method: str = "spearman", device: str | torch.device = "auto"
) -> xr.DataArray:
    """RSA of every layer's RDM against every other's (:func:`compare` with ``rsa:<method>``);
    ``method`` one of :data:`RSA_METHODS`, as rsatoolbox names them."""
    if method not in RSA_METHODS:
        raise ValueError(f"unknown RSA method {method!r}: expected one of {', '.join(RSA_METHODS)}")
    return compare(a, b, measure=f"rsa:{method}", device=device)


def cka(
    a: Any,
    b: Any = None,
    *,
    kernel: str = "linear",
    unbiased: bool = True,
    sigma: float = 1.0,
    device: str | torch.device = "auto",
) -> xr.DataArray:
    """CKA of every layer against every other (:func:`compare` with ``cka:<kernel>``);
    ``sigma``: the RBF bandwidth as a multiple of the median distance between stimuli."""
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"unknown CKA kernel {kernel!r}: expected 'linear' or 'rbf'")
    if not sigma > 0:
        raise ValueError(f"sigma must be a positive multiple of the median distance, got {sigma}")
    m = Measure("cka", kernel, sigma if kernel == "rbf" else None, unbiased)
    return compare(a, b, measure=m, device=device)


def shape_distance(
    a: Any, b: Any = None, *, alpha: float = 1.0, device: str | torch.device = "auto"
) -> xr.DataArray:
    """Angular shape distance (Williams et al. 2021) of every layer to every other;
    ``alpha`` 1 (Procrustes) to 0 (CCA, whitened: needs more stimuli than units)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 (CCA) and 1 (Procrustes), got {alpha}")
    return compare(a, b, measure=Measure("shape", "angular", float(alpha)), device=device)
