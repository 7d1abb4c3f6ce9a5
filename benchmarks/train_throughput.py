"""Training throughput of each learning rule on the paper's net (20 × 512, batch 256).

    python benchmarks/train_throughput.py [--device auto] [--steps 20] [--repeats 5]

Prints, for the current device: the measured float32 matmul peak; for each rule the median
time per step (forward, backward, Adam step), samples/s, and time relative to ``bp``
measured side by side (rules interleaved, round-robin, in one process); and ``bp``'s
achieved FLOP rate (6 × batch × Linear weights per step: forward, input grads, weight grads)
as a fraction of the peak. CPU targets: bp ≥ 50 % of peak, dfa ≤ 1.1×, sg-full ≤ 1.8× bp.
Run it on a quiet machine: another CPU-heavy process skews every number.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from training._cpu import keep_freed_memory
from training.rules import LOSSES
from training.train import TrainConfig, build, make_optimizer, resolve_device

RULES = {
    "bp": {"method": "bp"},
    "sg-single": {"method": "sg", "sg_layers": "middle"},
    "sg-full": {"method": "sg", "sg_layers": "all"},
    "sgprop-full": {"method": "sgprop", "sg_layers": "all"},
    "dfa": {"method": "dfa"},
    "fa": {"method": "fa"},
    "kickback": {"method": "kickback"},
}


def sync(device: torch.device) -> None:
    """Wait for the device to finish its queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """Best median FLOP/s of square float32 matmuls."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        a @ b
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rules", default=",".join(RULES))
    args = parser.parse_args()

    device = resolve_device(args.device)
    keep_freed_memory()  # as training.train does
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    peak = matmul_peak(device)
    print(f"matmul peak (float32, square): {peak / 1e9:.1f} GFLOP/s")

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
    setups = {}
    for name in args.rules.split(","):
        cfg = TrainConfig(
            depth=args.depth, width=args.width, batch_size=args.batch_size, **RULES[name]
        )
        model, rule = build(cfg)
        model.to(device).train()
        rule.to(device)
        setups[name] = (model, rule, make_optimizer(cfg, model, rule), LOSSES[cfg.loss_name])

    def run(name: str, steps: int) -> float:
        model, rule, optimizer, loss_fn = setups[name]
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            rule.step(model, x, y, loss_fn)
            optimizer.step()
        sync(device)
        return (time.perf_counter() - t0) / steps

    for name in setups:  # warm up: allocator, Adam state, kernels
        run(name, 3)
    times = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name in setups:
            times[name].append(run(name, args.steps))
    median = {name: statistics.median(t) for name, t in times.items()}

    model = setups[next(iter(setups))][0]
    weights = sum(lin.weight.numel() for lin in model.linears)
    flops = 6 * args.batch_size * weights
    print(f"\nnet {args.depth} × {args.width}, batch {args.batch_size}, {weights / 1e6:.2f} M weights, "
          f"{flops / 1e9:.2f} GFLOP per step (matmuls)")  # fmt: skip
    print(f"{'rule':12s} {'ms/step':>9s} {'spread':>8s} {'samples/s':>10s} {'× bp':>6s}")
    base = median.get("bp")
    for name, t in median.items():
        spread = (max(times[name]) - min(times[name])) / t
        ratio = f"{t / base:6.2f}" if base else "     -"
        print(f"{name:12s} {t * 1e3:9.2f} {spread:7.0%} {args.batch_size / t:10.0f} {ratio}")
    if base:
        rate = flops / base
        print(f"\nbp achieved {rate / 1e9:.1f} GFLOP/s = {rate / peak:.0%} of the matmul peak")
        for name, target in (("dfa", 1.1), ("sg-full", 1.8)):
            if name in median:
                ok = "ok" if median[name] / base <= target else "MISSED"
                print(f"{name}: {median[name] / base:.2f}× bp (target ≤ {target}×) {ok}")
        print(
            f"bp: {rate / peak:.0%} of peak (target ≥ 50%) {'ok' if rate / peak >= 0.5 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
