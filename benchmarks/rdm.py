"""RDM speed: repsim against per-layer numpy and rsatoolbox, and against the matmul floor.

    pip install rsatoolbox            # only for this benchmark; skipped if absent
    python benchmarks/rdm.py [--repeats 3] [--sizes 400x512x20,5000x512x20,2000x4096x5]

For each (stimuli × units × layers) it builds ReLU-like float32 activations and times, side
by side in one process: ``repsim.rdm.rdm`` on all layers at once (a DataArray with a
``layer`` dim), ``1 - np.corrcoef`` per layer (float64), and rsatoolbox's
``calc_rdm(method="correlation")`` per layer; the max absolute difference of each from the
float64 numpy result; and the floor: the FLOPs of one full Gram matrix per layer
(2·n²·d) over the machine's measured float32 matmul rate. Targets on CPU at 5000×512×20:
≥ 10× faster than rsatoolbox, ≥ 2× faster than np.corrcoef, within 1.5× of the floor.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import xarray as xr

from repsim.rdm import rdm


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="400x512x20,5000x512x20,2000x4096x5")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import rsatoolbox
    except ImportError:
        rsatoolbox = None
        print("rsatoolbox is not installed (pip install rsatoolbox): its column is skipped")
    rate = matmul_rate()
    print(
        f"float32 matmul rate: {rate / 1e9:.0f} GFLOP/s, torch threads: {torch.get_num_threads()}"
    )
    header = f"{'n × d × layers':>16} {'repsim':>8} {'floor':>7} {'/floor':>6} {'numpy':>8} {'×':>5} {'rsatoolbox':>10} {'×':>6}  max |Δ| numpy / rsatoolbox"
    print(header)
    for size in args.sizes.split(","):
        n, d, layers = (int(v) for v in size.split("x"))
        rng = np.random.default_rng(0)
        x = np.maximum(rng.standard_normal((layers, n, d), dtype=np.float32), 0)
        acts = xr.DataArray(x, dims=("layer", "stimulus", "unit"))
        t_repsim, ours = timed(lambda acts=acts: rdm(acts), args.repeats)
        ours = ours.values
        reps = max(1, args.repeats if n * n * layers < 1e8 else 1)
        t_numpy, _ = timed(lambda x=x: [1 - np.corrcoef(layer) for layer in x], reps)
        diff_numpy = max(
            float(np.abs(ours[i] - (1 - np.corrcoef(x[i]))).max()) for i in range(layers)
        )
        if rsatoolbox is not None:

            def rsa(x=x):
                return [
                    rsatoolbox.rdm.calc_rdm(
                        rsatoolbox.data.Dataset(layer), method="correlation"
                    ).get_matrices()[0]
                    for layer in x
                ]

            t_rsa, theirs = timed(rsa, reps)
            diff_rsa = max(float(np.abs(ours[i] - theirs[i]).max()) for i in range(layers))
            rsa_cols = f"{t_rsa:>9.2f}s {t_rsa / t_repsim:>5.1f}×"
        else:
            diff_rsa, rsa_cols = float("nan"), f"{'-':>10} {'-':>6}"
        floor = layers * 2 * n * n * d / rate
        print(
            f"{size:>16} {t_repsim:>7.3f}s {floor:>6.3f}s {t_repsim / floor:>5.2f}× {t_numpy:>7.2f}s "
            f"{t_numpy / t_repsim:>4.1f}× {rsa_cols}  {diff_numpy:.1e} / {diff_rsa:.1e}"
        )


if __name__ == "__main__":
    main()
