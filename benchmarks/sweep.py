"""Wall time and total training throughput of a sweep: serially, and on local Dask clusters.

    python benchmarks/sweep.py                                   # quick preset, 4 runs × 3 seeds
    python benchmarks/sweep.py --preset paper --device cuda --workers 1,4,12 --epochs 1

For each entry of ``--workers`` (``0``: the serial sweep, in this process; ``N``: a
``LocalCluster`` of N worker processes, one thread each, as ``--workers N`` starts) it trains
every run of the plan into a fresh directory with :func:`training.sweep.run_sweep` and prints
the time to start the cluster and import torch on its workers, then the sweep's wall time
(without that start) and the training samples processed per second over all runs (epochs ×
the steps of an epoch × batch size). Each worker loads the dataset in its first run: that is
in the wall time.

What to expect. On a CPU, the serial sweep already uses every core inside each run (torch's
thread pool), and N one-thread workers use the same cores one run each: the gain is only what
one run leaves unused (small layers, Python overhead), and each worker pays its start-up
(importing torch, loading the data). On a GPU, one run of the paper net leaves the GPU mostly
idle (a step is a few hundred small kernels, bound by Python and launch overhead), so several
workers sharing one GPU multiply the total samples/s until the GPU is busy:
``--preset paper --device cuda --workers 1,4,12`` measures that on the 12 paper runs (4 rules
× 3 seeds; ``--epochs 1`` keeps it short). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

from repsim import cluster, datasets
from training import sweep


def _samples(plan: dict) -> int:
    """Training samples the plan processes: per run, epochs × full batches × batch size."""
    sizes = {data: len(datasets.load(data, "train")[1]) for data in {c.data for c in plan.values()}}
    return sum(
        cfg.epochs * (sizes[cfg.data] // cfg.batch_size) * cfg.batch_size for cfg in plan.values()
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick", choices=sorted(sweep.PRESETS))
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="default: 0,1,2")
    p.add_argument("--methods", default=",".join(sweep.RUNS))
    p.add_argument("--workers", type=_ints, default=[0, 2], help="0 = serial; default: 0,2")
    p.add_argument("--device", default="auto")
    for name in ("epochs", "depth", "width"):  # smaller runs, for a smoke test
        p.add_argument(f"--{name}", type=int, help="override the preset's")
    p.add_argument("--data", help="override the preset's dataset")
    p.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    args = p.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("epochs", "depth", "width", "data")}
    plan = sweep.configs(
        args.preset,
        args.methods.split(","),
        args.seeds,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    samples = _samples(plan)
    cfg = next(iter(plan.values()))
    print(
        f"{len(plan)} runs of the {args.preset} preset ({cfg.depth} × {cfg.width}, "
        f"{cfg.data}, batch {cfg.batch_size}), {samples:,} training samples in all; "
        f"device {args.device}"
    )
    print(f"{'workers':>8s} {'start (s)':>10s} {'wall (s)':>9s} {'samples/s':>10s}")
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        for n in args.workers:
            out = Path(scratch) / f"workers-{n}"
            t0 = time.perf_counter()
            with cluster.connect(workers=n or None, log=lambda line: None) as client:
                if client is not None:  # torch and the training code, imported by each worker
                    client.run(importlib.import_module, "training.sweep")
                started = time.perf_counter() - t0
                t0 = time.perf_counter()
                results = sweep.run_sweep(
                    plan, out, device=args.device, progress=False, client=client
                )
                wall = time.perf_counter() - t0
            failed = [r for r in results if r.error]
            if failed:
                print(f"{failed[0].name}: {failed[0].error}", file=sys.stderr)
                return 1
            label = "serial" if n == 0 else str(n)
            print(f"{label:>8s} {started:10.1f} {wall:9.1f} {samples / wall:10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
