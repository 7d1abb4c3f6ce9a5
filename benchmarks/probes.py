"""Probes at the paper's scale: repsim's all-layer probes against scikit-learn and the matmul floor.

    python benchmarks/probes.py [--device auto] [--repeats 3] [--quick]

The data are real: a randomly initialised 20 × 512 MLP (``training.model.MLP``) applied to
mnist-5k's 4,000 train digits and its 1,000 held-out test digits, every block recorded by
:func:`repsim.extract.extract`: 20 layers × 4,000 stimuli × 512 units, 10 classes.

- Classifier: :func:`repsim.probes.classifier_probe` (every layer at once) against a loop
  of scikit-learn's ``StandardScaler`` + ``LogisticRegression`` per layer, with the same C
  and tol (scikit-learn's defaults) and max_iter raised so that every layer converges;
  scikit-learn runs with whichever of its default threads or one thread is faster here.
  Targets: ≥ 3× faster, held-out accuracy within 1 point on every layer.
- Regressor: :func:`repsim.probes.regressor_probe` against its floor, the FLOPs of XᵀX,
  XᵀY, the Cholesky factorisation and the triangular solves over the float32 matmul rate
  measured here. Target: within 1.5×.

Times are medians over ``--repeats`` after one warm-up run; scikit-learn's loop runs once
per repeat too. ``--quick`` (4 layers × 1,000 stimuli × 128 units, one repeat) only checks
that the script runs. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from train_throughput import matmul_peak, sync  # the training benchmark's measurement

from repsim import datasets
from repsim.devices import resolve_device
from repsim.extract import extract
from repsim.probes import classifier_probe, regressor_probe
from training.model import MLP


def activations(depth: int, width: int, n_train: int | None, device: torch.device):
    """Train and test trees of a random-init MLP on mnist-5k, and the input pixels."""
    torch.manual_seed(0)
    model = MLP(depth=depth, width=width)
    train = datasets.select(f"mnist-5k:train:{n_train or 'all'}")
    test = datasets.select("mnist-5k:test:all")
    trees = [
        extract(model, s.inputs, model.layer_names, labels=s.labels, indices=s.indices,
                device=device)
        for s in (train, test)
    ]  # fmt: skip
    return *trees, train, test, model.layer_names


def sklearn_probe(tr, te, layers, C: float, tol: float, max_iter: int) -> np.ndarray:
    """Train and test accuracy ``[layers, 2]``, one LogisticRegression per layer."""
    out = []
    for layer in layers:
        a, b = tr[layer]["activations"], te[layer]["activations"]
        scaler = StandardScaler().fit(a.values)
        model = LogisticRegression(C=C, tol=tol, max_iter=max_iter)
        xa, xb = scaler.transform(a.values), scaler.transform(b.values)
        model.fit(xa, a["label"].values)
        out.append((model.score(xa, a["label"].values), model.score(xb, b["label"].values)))
    return np.array(out)


def timed(fn, device: torch.device, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, result


def spread(times: list[float]) -> str:
    return (
        f"median of {len(times)}, spread {(max(times) - min(times)) / statistics.median(times):.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="4 × 128 units, 1,000 stimuli")
    args = parser.parse_args()
    depth, width, n_train = (4, 128, 1000) if args.quick else (20, 512, None)
    repeats = 1 if args.quick else args.repeats

    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    tr, te, train, test, layers = activations(depth, width, n_train, device)
    n, n_test = len(train.labels), len(test.labels)
    print(f"{len(layers)} layers × {n} train ({n_test} test) stimuli × {width} units, "
          f"{len(np.unique(train.labels))} classes, mnist-5k through a random-init MLP")  # fmt: skip

    # ---------------------------------------------------------------- classifier
    def ours():
        return classifier_probe(tr, te, C=args.C, tol=args.tol, device=device)

    ours()  # warm-up
    ours_times, acc = timed(ours, device, repeats)

    # scikit-learn with the thread setting that suits it here, chosen on the middle layer
    mid = [layers[len(layers) // 2]]
    settings = {"default threads": None, "1 thread": 1}
    trial = {}
    for name, limit in settings.items():
        with threadpool_limits(limit):
            trial[name] = timed(lambda: sklearn_probe(tr, te, mid, args.C, args.tol, 1000), device, 1)[0][0]  # fmt: skip
    best = min(trial, key=trial.get)
    with threadpool_limits(settings[best]):
        sk_times, sk_acc = timed(
            lambda: sklearn_probe(tr, te, layers, args.C, args.tol, 1000), device, repeats
        )
    t_ours, t_sk = statistics.median(ours_times), statistics.median(sk_times)
    diff = np.abs(acc.values[0] - sk_acc)
    print(f"\nclassifier probe: C={args.C}, tol={args.tol}, standardised units")
    print(f"  repsim, every layer at once    {t_ours:8.2f} s  ({spread(ours_times)})")
    print(f"  scikit-learn, a loop of layers {t_sk:8.2f} s  ({spread(sk_times)}; {best}: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in trial.items()) + f" on {mid[0]})")  # fmt: skip
    print(f"  {'layer':8s} {'repsim train':>12s} {'test':>6s} {'sklearn train':>14s} {'test':>6s}")
    for layer, a, b in zip(layers, acc.values[0], sk_acc, strict=True):
        print(f"  {layer:8s} {a[0]:12.4f} {a[1]:6.4f} {b[0]:14.4f} {b[1]:6.4f}")
    speed = t_sk / t_ours
    print(f"  speed: {speed:.1f}× scikit-learn (target ≥ 3×) {'ok' if speed >= 3 else 'MISSED'}")
    worst = float(diff[:, 1].max()) * 100
    print(f"  held-out accuracy: largest difference {worst:.2f} points on "
          f"{layers[int(diff[:, 1].argmax())]} (target ≤ 1) {'ok' if worst <= 1 else 'MISSED'}; "
          f"train: {float(diff[:, 0].max()) * 100:.2f} points")  # fmt: skip

    # ---------------------------------------------------------------- regressor
    def ridge():
        return regressor_probe(tr, te, train.inputs, test.inputs, alpha=args.alpha, device=device)

    ridge()  # warm-up
    ridge_times, _ = timed(ridge, device, repeats)
    peak = matmul_peak(device)
    d, p = width, train.inputs.shape[1]
    flops = len(layers) * (2 * n * d * d + 2 * n * d * p + d**3 / 3 + 2 * d * d * p)
    floor, t_ridge = flops / peak, statistics.median(ridge_times)
    print(f"\nregressor probe: alpha={args.alpha}, {len(layers)} layers → {p} pixels")
    print(f"  matmul peak (float32, square) {peak / 1e9:.1f} GFLOP/s")
    print(f"  floor: {flops / 1e9:.1f} GFLOP (XᵀX, XᵀY, Cholesky, solves) = {floor:.3f} s")
    print(f"  repsim {t_ridge:.3f} s ({spread(ridge_times)}) = {t_ridge / floor:.2f}× the floor "
          f"(target ≤ 1.5×) {'ok' if t_ridge / floor <= 1.5 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
