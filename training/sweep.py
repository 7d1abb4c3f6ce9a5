"""Train the paper's four runs with one shared configuration.

    python -m training.sweep --preset paper --out ckpt/
    python -m training.sweep --preset quick --out ckpt/ --methods bp,dfa --seeds 0,1,2
    python -m training.sweep --preset paper --seeds 0,1,2 --out /shared/ckpt --workers 12
    python -m training.sweep --preset paper --out /shared/ckpt --scheduler tcp://host:8786

The four runs of Czarnecki et al. (2017), Section 5: ``bp``; ``sg-single``, one synthetic
gradient after the middle block (block 11 of 20); ``sg-full``, a synthetic gradient after
every block; and ``dfa``. They share the preset's network, data, optimiser and seeds.
Each run goes to ``<out>/<run>`` (``<out>/<run>/seed-<k>`` with several seeds); a finished
run is skipped and an interrupted one resumes, so rerunning the command is always safe.
Any TrainConfig flag (``--epochs 5``, ``--data mnist``, ...) overrides the preset.

With ``--workers N`` (a Dask cluster of N processes on this machine) or ``--scheduler
ADDRESS`` (a running cluster), each run is one task (:func:`run_sweep`, :mod:`repsim.cluster`):
GPUs are shared round-robin, a worker that dies loses only its run's current epoch (the
scheduler runs the task again, and it resumes), and the output directory must be on storage
every worker sees.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repsim import checkpoints, cluster, datasets
from repsim.checkpoints import check_destination, read_history
from training.config import TrainConfig, add_config_arguments
from training.train import train

#: The paper's setting (Czarnecki et al. 2017, Supplementary C): "feed forward networks with
#: h layers of 512 hidden relu units followed by batch normalisation layers. The final layer
#: is a regular 10-class softmax layer. Inputs were scaled to [0, 1] interval, besides that
#: there was no preprocessing applied"; "the Adam optimiser with a learning rate of 3e-5.
#: This applies to both main model and to SG module"; h = 20 for the RDMs (Figure 7) and
#: weight norms (Figure 5); MNIST, 60,000 / 10,000.
#:
#: Choices the paper leaves open, made here:
#:
#: - batch size 128 (not stated);
#: - number of steps (not stated; its Supplementary C mentions runs of "100k iterations"
#:   only for the SG-without-activations experiment): 20 epochs (9,360 steps). ``bp``
#:   passes 99.5 % training accuracy on all 60,000 digits at epoch 9, 10 and 9 (seeds 0, 1,
#:   2; measured on the REPORT's runs), so 20 leaves a 2× margin;
#: - ``sg-full`` (an SG after each of the 20 blocks) trains for 100 epochs (46,800 steps) with
#:   every learning rate decayed to 0 along a cosine (``lr_schedule="cosine"``): the preset's
#:   only per-run settings (:data:`RUN_OVERRIDES`); the ``sg`` rule itself is Table 1's, with
#:   the paper's linear SG modules. Why: a bootstrapped chain of 20 linear SGs learns more
#:   slowly than the other rules and, at the paper's constant rate, plateaus below 99 %
#:   training accuracy (98.64, 98.64, 98.58 % after 60 epochs on seeds 0-2, ≤ 0.1 point gained
#:   over the last 10) — as the paper's Section 3 predicts for a linear SG under log loss
#:   ("will struggle to overfit to training data"). At that rate 40 more constant-rate epochs
#:   would not reach 99 % either. The change found that passes 99 % on every seed, and the
#:   smallest of those tried: a cosine decay over 100 epochs (99.30, 99.32, 99.30 % on seeds
#:   0-2, first past 99 % at epochs 56-58; test 98.10, 97.88, 98.11 %). Not enough: the same decay over 60 epochs (98.7 %), or with no weight decay; 10× the SG
#:   learning rate plateaus lower (97.4 %); the sigmoid SG modules Section 3 recommends are
#:   unstable at a constant rate. All measured in analyses/sgfull_variants.py (REPORT.md);
#: - weight decay 1e-4 as an L2 term on the Linear weights (the paper: "a small L2 penalty
#:   added to weights to make norm correspond roughly to amount of computation", size not
#:   stated);
#: - initialisation: PyTorch's default for Linear layers (not stated);
#: - the last incomplete batch of each epoch is dropped (drawn afresh each epoch);
#: - synthetic-gradient quality is measured every 100 steps (``sg_quality_every``; changes
#:   nothing in training).
PAPER = TrainConfig(
    depth=20,
    width=512,
    activation="relu",
    batchnorm=True,
    data="mnist",
    epochs=20,
    batch_size=128,
    lr=3e-5,
    weight_decay=1e-4,
    sg_quality_every=100,
)

PRESETS: dict[str, TrainConfig] = {
    "paper": PAPER,
    # The paper's network and optimiser on the embedded 5,000-digit subset (4,000 to train),
    # for machines without full MNIST: 31 steps an epoch, so more epochs for the same
    # training accuracy. Measured on seed 0 (2 CPU cores): bp passes 99.5 % at epoch 23 (test
    # accuracy only 75-83 %: 4,000 digits at this small step generalise poorly), so 60 epochs
    # leave the paper preset's margin; sg-full passes 99 % at epoch 136 and 99.5 % at 151 and
    # ends at 99.98 % / 92.7 % test after 180 (7.3 min).
    "paper-5k": dataclasses.replace(PAPER, data="mnist-5k", epochs=60, sg_quality_every=31),
    # The same four runs on a small net and a larger step: under 2 minutes for all four
    # on 2 CPU cores; for the demo and the tests, not for conclusions.
    "quick": TrainConfig(depth=8, width=128, epochs=20, batch_size=128, lr=1e-3),
}
RUNS: dict[str, dict[str, str]] = {
    "bp": {"method": "bp"},
    "sg-single": {"method": "sg", "sg_layers": "middle"},
    "sg-full": {"method": "sg", "sg_layers": "all"},
    "dfa": {"method": "dfa"},
}
#: Settings a preset gives one run on top of its own (explicit, and printed by the sweep).
RUN_OVERRIDES: dict[str, dict[str, dict]] = {
    # sg-full at the paper's constant rate stops short of 99 % training accuracy: see PAPER.
    "paper": {"sg-full": {"epochs": 100, "lr_schedule": "cosine"}},
    "paper-5k": {"sg-full": {"epochs": 180}},
}


def configs(
    preset: str, runs: Sequence[str], seeds: Sequence[int], **overrides
) -> dict[str, TrainConfig]:
    """Run name (relative path under the output directory) → configuration."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if unknown := [r for r in runs if r not in RUNS]:
        raise ValueError(f"unknown run {unknown[0]!r}: expected some of {', '.join(RUNS)}")
    if not runs or not seeds:
        raise ValueError("give at least one run (--methods) and one seed (--seeds)")
    out = {}
    for label in runs:
        for seed in seeds:
            name = label if len(seeds) == 1 else f"{label}/seed-{seed}"
            extra = RUN_OVERRIDES.get(preset, {}).get(label, {})
            settings = {**extra, **overrides, **RUNS[label], "seed": seed}
            out[name] = dataclasses.replace(PRESETS[preset], **settings)
    return out


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What became of one run of a sweep (:func:`run_sweep`)."""

    #: The run's name in the plan, and its checkpoint directory.
    name: str
    path: Path
    #: One dict per epoch (``history.csv``'s rows); empty when the run failed.
    history: list[dict]
    #: Why the run failed (one line), or None.
    error: str | None = None
    #: Epochs its checkpoint already held when the attempt that finished it began.
    resumed_after: int = 0
    #: Where it trained: the device, and the worker on a cluster.
    where: str = ""
    #: Wall time of that attempt.
    seconds: float = 0.0


#: A run's own problems (a refused directory, a diverging loss, a missing dataset): reported
#: for that run, never retried.
_RUN_ERRORS = (ValueError, PermissionError, FloatingPointError, datasets.DatasetNotFoundError)


def _train_one(
    name: str, cfg: TrainConfig, out: Path, device: str, progress: bool, where: str = ""
) -> RunResult:
    """Train (or resume, or skip) one run into ``out``; its result, failures included."""
    t0, resumed = time.perf_counter(), 0
    try:
        if (out / checkpoints.META).is_file():
            resumed = int(checkpoints.read_meta(out).get("epoch", 0))
        _, history = train(cfg, out, device=device, progress=progress)
    except _RUN_ERRORS as err:
        return RunResult(name, out, [], str(err), resumed, where, time.perf_counter() - t0)
    return RunResult(name, out, history, None, resumed, where, time.perf_counter() - t0)


def _train_task(name: str, cfg: TrainConfig, out: str, device: str, index: int) -> RunResult:
    """One run as a task on a Dask worker (:func:`run_sweep`)."""
    from distributed import get_worker

    device = cluster.prepare_task(device, index)
    return _train_one(name, cfg, Path(out), device, False, f"{device} on {get_worker().address}")


def _check_outputs(plan: Mapping[str, TrainConfig], out: Path) -> None:
    for name in plan:  # every output directory, before the first run trains
        check_destination(out / name)


def _line(result: RunResult) -> str:
    if result.error is not None:
        return f"{result.path}: failed: {result.error}"
    last = result.history[-1]
    done = f"{len(result.history) - result.resumed_after} epochs in {result.seconds:.1f}s"
    if result.resumed_after >= len(result.history):
        done = "finished before, skipped"
    elif result.resumed_after:
        done += f", resumed after epoch {result.resumed_after}"
    return (
        f"{result.path}: train {last['train_accuracy']:.4f}  test {last['test_accuracy']:.4f}  "
        f"({done}{', ' + result.where if result.where else ''})"
    )


def run_sweep(
    plan: Mapping[str, TrainConfig],
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    client: Any = None,
) -> list[RunResult]:
    """Train every run of ``plan`` into ``out/<name>``: one after another, or as tasks on a
    Dask cluster.

    A finished run is skipped, an interrupted one resumes from its last epoch, and a
    directory holding another configuration is refused (that run fails, the others go on).

    Parameters
    ----------
    plan
        Run name → configuration (:func:`configs`).
    device
        ``"auto"``, ``"cpu"``, ``"cuda:N"``, ...; on a cluster, ``"auto"`` gives run ``i``
        the GPU ``i % n`` of its worker's ``n`` GPUs (the CPU without one).
    progress
        Progress bars (serially), and one line per run on stderr as it finishes.
    client
        A ``dask.distributed.Client``: each run is then one task (retried if its worker
        dies; the retry resumes from the run's last checkpoint). Its workers must see and
        write ``out``: a shared filesystem (checked before any run starts).

    Returns
    -------
    list of RunResult
        In the plan's order.

    Raises
    ------
    ValueError, PermissionError
        An output directory cannot be used (before any run trains), or a worker cannot
        see or write ``out``.

    Examples
    --------
    >>> plan = configs("quick", ["bp", "dfa"], [0, 1])  # doctest: +SKIP
    >>> from distributed import Client  # doctest: +SKIP
    >>> results = run_sweep(plan, "/shared/ckpt", client=Client("tcp://host:8786"))  # doctest: +SKIP
    """
    out = Path(out).expanduser()
    _check_outputs(plan, out)

    def finished(result: RunResult) -> RunResult:
        if progress:
            print(_line(result), file=sys.stderr, flush=True)
        return result

    if client is None:
        return [
            finished(_train_one(name, cfg, out / name, device, progress))
            for name, cfg in plan.items()
        ]
    import distributed

    root = cluster.check_shared(client, out)
    futures = {
        client.submit(
            _train_task,
            name,
            cfg,
            str(root / name),
            device,
            i,
            key=f"train-{name}-{secrets.token_hex(4)}",
            pure=False,
            retries=2,  # an unexpected error (a flaky filesystem); a worker's death is
            # retried by the scheduler itself, up to distributed.scheduler.allowed-failures
        ): name
        for i, (name, cfg) in enumerate(plan.items())
    }
    done: dict[str, RunResult] = {}
    for future in distributed.as_completed(futures):
        name = futures[future]
        try:
            result = future.result()
        except Exception as err:  # retries used up, or every worker it ran on died
            result = RunResult(name, root / name, [], f"{type(err).__name__}: {err}")
        done[name] = finished(result)
    return [done[name] for name in plan]


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.sweep",
        description="Train bp, sg-single, sg-full and dfa with one shared configuration.",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--out", type=Path, default=Path("ckpt"), help="default: ckpt")
    parser.add_argument(
        "--methods", default=",".join(RUNS), help=f"runs, default: {','.join(RUNS)}"
    )
    parser.add_argument("--seeds", type=_ints, default=[0], help="default: 0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true")
    cluster.add_arguments(parser)
    add_config_arguments(parser, None, exclude=("method", "sg_layers", "seed"))
    args = parser.parse_args(argv)
    own = {"preset", "out", "methods", "seeds", "device", "quiet", "scheduler", "workers"}
    overrides = {k: v for k, v in vars(args).items() if k not in own}
    try:
        plan = configs(args.preset, args.methods.split(","), args.seeds, **overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # a missing dataset is found now, not after the first runs have trained
        for data in dict.fromkeys(cfg.data for cfg in plan.values()):
            for split in ("train", "test"):
                datasets.find(data, split)
    except datasets.DatasetNotFoundError as err:
        print(f"error: preset {args.preset!r} needs {err}", file=sys.stderr)
        return 2

    def note(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        _check_outputs(plan, args.out)  # before a cluster starts
        with cluster.connect(args.scheduler, args.workers, log=note) as client:
            results = run_sweep(
                plan, args.out, device=args.device, progress=not args.quiet, client=client
            )
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note(f"\ninterrupted; rerun the same command to resume the runs in {args.out}")
        return 130
    print(f"\n{'run':18s} {'epochs':>6s} {'train acc':>9s} {'test acc':>9s} {'train time':>10s}")
    for result in results:
        if result.error is not None:
            continue
        last = result.history[-1]
        trained = sum(float(r["time_s"]) for r in read_history(result.path))
        print(
            f"{result.name:18s} {last['epoch']:6d} {last['train_accuracy']:9.4f} "
            f"{last['test_accuracy']:9.4f} {trained:9.1f}s"
        )
    failed = [r for r in results if r.error is not None]
    for result in failed:
        note(f"error: {result.path}: {result.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
