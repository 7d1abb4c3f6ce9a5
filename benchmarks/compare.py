"""repsim.compare speed: all-pairs linear CKA against its matmul floor and a per-pair loop,
and the bootstrap of the diagonal L2.

    python benchmarks/compare.py [--repeats 3] [--stimuli 5000] [--units 512] [--layers 80]

1. Linear CKA (unbiased, the default) of every pair of ``--layers`` layers (4 runs × 20
   layers = 80: 3,160 distinct pairs) at ``--stimuli`` × ``--units``: ``repsim.compare.cka``
   on the whole stack, against the floor — the matmuls alone, timed in the same run: one
   centred Gram ``X Xᵀ`` per layer and the products of the flattened Grams, float32 — and
   against the per-pair loop that ``torch-cka``-style code runs (for each pair, build and
   centre both Grams, ``H K H``, and take their HSIC; timed on ``--loop-pairs`` pairs and
   scaled to all pairs), and against the per-pair feature-space form a careful notebook
   would loop over. Targets: ≤ 3× the floor, ≥ 10× faster than the loop. The accuracy is
   checked against the float64 feature-space form on the sampled pairs.
2. 1,000 bootstrap resamples of the diagonal L2 for 4 runs × 20 layers at 400 stimuli
   (``repsim.compare.bootstrap_diag_l2``): target under a minute on 2 cores.

Run it on a quiet machine; medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import xarray as xr

from repsim import compare
from repsim.rdm import rdm


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def activations(layers: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    """ReLU-like layers that drift from one to the next (so scores are not all ~0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    out = []
    for _ in range(layers):
        x = torch.relu(x @ (torch.randn(d, d, generator=g) / d**0.5) + 0.1)
        x = x / x.std()
        out.append(x)
    return torch.stack(out)


def floor(x: torch.Tensor, block: int) -> None:
    """The matmuls of all-pairs Gram CKA and nothing else: each layer's Gram rows, written
    into one buffer, and the products of the flattened rows."""
    m, n, _ = x.shape
    buf = torch.empty(m, block * n)
    inner = torch.zeros(m, m, dtype=torch.float64)
    for s in range(0, n, block):
        r = min(block, n - s)
        for t in range(m):
            torch.mm(x[t, s : s + r], x[t].T, out=buf[t, : r * n].view(r, n))
        f = buf[:, : r * n]
        inner += (f @ f.T).double()


def feature_pairs(x: torch.Tensor, pairs: list[tuple[int, int]]) -> list[float]:
    """Per-pair biased linear CKA in feature space (Kornblith et al. 2019, eq. 5), the fast
    form a careful notebook loops over: ``‖YᵀX‖² / (‖XᵀX‖ ‖YᵀY‖)``, features centred."""
    xc = x - x.mean(dim=1, keepdim=True)
    return [
        float(
            torch.linalg.matrix_norm(xc[j].T @ xc[i]) ** 2
            / (
                torch.linalg.matrix_norm(xc[i].T @ xc[i])
                * torch.linalg.matrix_norm(xc[j].T @ xc[j])
            )
        )
        for i, j in pairs
    ]


def loop_pairs(x: torch.Tensor, pairs: list[tuple[int, int]]) -> list[float]:
    """Per-pair CKA as torch-cka and tutorials write it: both Grams rebuilt and centred
    (``H K H``) for every pair."""
    n = x.shape[1]
    h = torch.eye(n, dtype=x.dtype) - 1.0 / n
    out = []
    for i, j in pairs:
        k, l_ = x[i] @ x[i].T, x[j] @ x[j].T
        kc, lc = h @ k @ h, h @ l_ @ h
        out.append(float((kc * lc).sum() / (kc.norm() * lc.norm())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stimuli", type=int, default=5000)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-pairs", type=int, default=6)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    n, d, m = args.stimuli, args.units, args.layers
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    x = activations(m, n, d)
    acts = xr.DataArray(x.numpy(), dims=("layer", "stimulus", "unit"))
    pairs = m * (m - 1) // 2

    block = max(1, (1 << 30) // (4 * m * n))
    t_floor, _ = timed(lambda: floor(x, block), args.repeats)
    t_ours, sim = timed(lambda: compare.cka(acts, device="cpu"), args.repeats)
    t_biased, _ = timed(lambda: compare.cka(acts, unbiased=False, device="cpu"), args.repeats)
    sample = [(i, (i * 7 + 3) % m) for i in range(args.loop_pairs)]
    t_loop, _ = timed(lambda: loop_pairs(x, sample), 1)
    t_loop_all = t_loop / len(sample) * pairs
    t_feat, _ = timed(lambda: feature_pairs(x, sample * 5), args.repeats)
    t_feat_all = t_feat / (5 * len(sample)) * pairs
    biased = compare.cka(acts, unbiased=False, device="cpu").values
    exact = feature_pairs(x.to(torch.float64), sample)  # float64 reference
    err = max(abs(biased[i, j] - r) for (i, j), r in zip(sample, exact, strict=True))
    print(f"\nlinear CKA, {m} layers ({pairs:,} distinct pairs), {n} stimuli × {d} units")
    print(f"  matmul floor (float32)           {t_floor:8.2f} s")
    print(
        f"  repsim, unbiased (default)       {t_ours:8.2f} s   {t_ours / t_floor:5.2f}× the floor"
    )
    print(
        f"  repsim, biased                   {t_biased:8.2f} s   {t_biased / t_floor:5.2f}× the floor"
    )
    print(
        f"  per-pair Gram loop (torch-cka)   {t_loop_all:8.0f} s   (scaled from {len(sample)} pairs: "
        f"{t_loop / len(sample):.2f} s each; H K H per pair); repsim {t_loop_all / t_ours:.0f}× faster"
    )
    print(
        f"  per-pair feature-space loop      {t_feat_all:8.1f} s   (scaled from {5 * len(sample)} "
        f"pairs); repsim {t_feat_all / t_ours:.1f}× faster"
    )
    print(f"  max |repsim biased − float64 feature-space form| on those pairs: {err:.1e}")
    print(f"  median off-diagonal score: {float(np.median(sim.values[np.triu_indices(m, 1)])):.3f}")

    small = activations(m, 400, d, seed=1)
    labels = np.repeat(np.arange(10), 40)
    acts400 = xr.DataArray(
        small.numpy().reshape(4, m // 4, 400, d),
        dims=("run", "layer", "stimulus", "unit"),
        coords={"label": ("stimulus", labels)},
    )
    rdms = rdm(acts400, device="cpu")
    t_boot, samples = timed(
        lambda: compare.bootstrap_diag_l2(rdms, n=args.bootstrap, seed=0), args.repeats
    )
    print(
        f"\ndiagonal L2 bootstrap: {args.bootstrap} resamples × 4 runs × {m // 4} layers × 400 "
        f"stimuli: {t_boot:.2f} s (target < 60 s); samples {dict(samples.sizes)}"
    )


if __name__ == "__main__":
    main()
