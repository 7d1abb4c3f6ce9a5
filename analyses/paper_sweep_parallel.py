"""Train a preset's runs as parallel processes sharing one GPU (how the REPORT's runs were made).

    python analyses/paper_sweep_parallel.py --preset paper --seeds 0,1,2 --out ckpt-paper

Each of the 12 runs (4 rules × 3 seeds) of the 20 × 512 paper net leaves a GPU mostly idle:
a step is a few hundred small kernels, bound by Python and launch overhead. One process per
run keeps the GPU busy. The runs are exactly ``python -m training.sweep``'s (same configs,
same directories ``<out>/<run>/seed-<k>``): a finished run is skipped, an interrupted one
resumes, so the sweep command and this script can be mixed. ``--deadline`` stops every run
after that many seconds (each keeps its last finished epoch; rerun to continue).

This is a stop-gap for one machine; several machines are the job of a Dask cluster.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path


def _one(name: str, cfg, out: Path, device: str) -> tuple[str, int, float]:
    import torch

    from training.train import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()

    def report(epoch: int, row: dict) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {name:16s} epoch {epoch:3d}/{cfg.epochs}  "
              f"train {row['train_accuracy']:.4f}  test {row['test_accuracy']:.4f}  "
              f"{row['time_s']:.1f}s", flush=True)  # fmt: skip

    _, history = train(cfg, out / name, device=device, progress=False, callback=report)
    return name, history[-1]["epoch"] if history else 0, time.perf_counter() - t0


def run_parallel(
    plan: dict, out: Path, device: str, deadline: float | None = None
) -> list[tuple[str, int, float]]:
    """Train every ``name → TrainConfig`` of ``plan`` into ``out/name``, one process each;
    returns (name, epochs, seconds) of the runs that finished before ``deadline``."""
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    # the longest runs first, so that they start at once
    order = sorted(plan, key=lambda n: -plan[n].epochs * (len(plan[n].sg_positions) + 5))
    with ctx.Pool(len(plan)) as pool:
        jobs = [pool.apply_async(_one, (n, plan[n], out, device)) for n in order]
        done = []
        for job in jobs:
            left = None if deadline is None else deadline - (time.perf_counter() - t0)
            try:
                done.append(job.get(timeout=None if left is None else max(left, 1)))
            except mp.TimeoutError:
                print(f"deadline of {deadline:.0f}s reached: stopping the runs still "
                      "training (each keeps its last finished epoch)", flush=True)  # fmt: skip
                pool.terminate()
                break
    for name, epochs, seconds in done:
        print(f"finished {name:16s} {epochs:4d} epochs in {seconds:7.1f}s")
    print(f"wall time {time.perf_counter() - t0:.1f}s; {len(done)} of {len(plan)} runs finished")
    return done


def main() -> int:
    from training.sweep import RUNS, configs

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(RUNS))
    p.add_argument("--out", type=Path, default=Path("ckpt-paper"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline", type=float, default=None, help="seconds; default: none")
    p.add_argument("--epochs", type=int, default=None, help="override (for a smoke test)")
    p.add_argument("--depth", type=int, default=None, help="override (for a smoke test)")
    p.add_argument("--data", default=None, help="override (for a smoke test)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {k: getattr(args, k) for k in ("epochs", "depth", "data") if getattr(args, k)}
    plan = configs(args.preset, args.methods.split(","), seeds, **overrides)
    if len(seeds) == 1:  # keep the <run>/seed-<k> layout of a multi-seed sweep
        plan = {f"{name}/seed-{seeds[0]}": cfg for name, cfg in plan.items()}
    done = run_parallel(plan, args.out, args.device, args.deadline)
    return 0 if len(done) == len(plan) else 1


if __name__ == "__main__":
    sys.exit(main())
