"""Extraction throughput and peak memory through the paper's net (20 × 512, every block).

    python benchmarks/extract.py [--sizes 1000,10000,50000] [--device auto] [--repeats 3]

For each size, a fresh process builds the net, loads the stimuli through the command
line's own path (``mnist:train:<n>``: full MNIST from $REPSIM_DATA, ./data or
../shared/data; random inputs of MNIST's shape when it is absent), and streams all 20
layers into a temporary zarr store with :func:`repsim.extract.extract_to_zarr`. Prints
stimuli/s (median over repeats), the process's peak resident memory, and the peak's growth
from the second size to the last: the target is ≤ 20 %, memory that does not grow with the
number of stimuli. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(n: int, device: str, store: str, batch_size: int) -> dict:
    import numpy as np
    import torch

    from repsim import datasets, extract
    from training.model import MLP

    torch.manual_seed(0)
    model = MLP(depth=20, width=512)
    try:
        inputs, labels, indices = datasets.select(f"mnist:train:{n}")
        source = "mnist:train"
    except datasets.DatasetNotFoundError:
        data = torch.rand(60_000, 784)  # the same footprint as MNIST's training split

        inputs, labels, indices = data[:n], np.zeros(n, np.int64), np.arange(n)
        source = "random"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    extract.extract_to_zarr(
        model, inputs, model.layer_names, store, run="paper", labels=labels, indices=indices,
        batch_size=batch_size, device=device,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    return {
        "n": n,
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "source": source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device, args.store, args.batch_size)))
        return
    env = dict(os.environ)
    shared = ROOT.parent / "shared" / "data"
    if "REPSIM_DATA" not in env and (shared / "mnist").is_dir():
        env["REPSIM_DATA"] = str(shared)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'stimuli':>8} {'stimuli/s':>10} {'seconds':>8} {'RSS before':>11} {'peak RSS':>9}  data"
    )
    peaks = {}
    for n in sizes:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(n), "--store", f"{tmp}/a.zarr",
                     "--device", args.device, "--batch-size", str(args.batch_size)],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_rss_mb"] for r in runs)
        before = statistics.median(r["rss_before_mb"] for r in runs)
        peaks[n] = peak
        print(
            f"{n:>8} {n / seconds:>10,.0f} {seconds:>8.2f} {before:>8.0f} MB {peak:>6.0f} MB  {runs[0]['source']}"
        )
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        growth = peaks[b] / peaks[a] - 1
        verdict = "PASS" if growth <= 0.20 else "FAIL"
        print(
            f"peak memory growth from {a:,} to {b:,} stimuli: {growth:+.1%} (target ≤ +20 %): {verdict}"
        )


if __name__ == "__main__":
    main()
