"""Checkpoints of a training run: what ``checkpoint.json`` records, saving, resuming.

A run's checkpoint directory (DESIGN.md, Contract 1) holds besides the network the rule's
state and Adam's (in ``extras.safetensors``, the optimizer's param_groups as JSON metadata),
so that :func:`resume` restores everything an epoch boundary needs: no RNG state is kept
(see :mod:`training.train` for why none is needed).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import nn

from repsim import checkpoints
from training.config import TrainConfig, stored_config
from training.model import MLP

__all__ = ["FACTORY", "resume", "save"]

FACTORY = "training.model:MLP"


#: The columns of ``sg_quality.csv`` and their types, in order.
_QUALITY_COLUMNS: dict[str, type] = {
    "step": int,
    "epoch": int,
    "position": int,
    "measure": str,
    "value": float,
}


def _quality_row(row: dict[str, str]) -> dict:
    """A row of ``sg_quality.csv`` as read back (strings) with its types restored."""
    return {column: kind(row[column]) for column, kind in _QUALITY_COLUMNS.items()}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], str]:
    """Adam's state_dict as flat tensors plus its param_groups as JSON."""
    tensors = {
        f"optim/{idx}/{key}": value
        for idx, per_param in state["state"].items()
        for key, value in per_param.items()
    }
    return tensors, json.dumps(state["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: str) -> dict:
    """The inverse of :func:`_flatten_optimizer`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/")
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": json.loads(groups)}


def _history(out: Path) -> list[dict]:
    rows = checkpoints.read_history(out)
    return [{k: (float(v) if k != "epoch" else int(v)) for k, v in row.items()} for row in rows]


def _load_state(
    out: Path, model: MLP, rule: nn.Module, optimizer: torch.optim.Optimizer, finished: bool
) -> list[dict]:
    """Load a checkpoint's network, rule and optimizer state; its history. A ``finished`` run
    (nothing left to train) may lack the rule's and optimizer's state: a run published or
    copied without ``extras.safetensors`` is still reused, not trained again."""
    fix = f"delete {out} to start over, or choose another --out"
    model_state, _ = checkpoints.read_tensors(out / checkpoints.MODEL)
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise ValueError(
            f"the checkpoint holds non-finite weights ({', '.join(bad[:3])}) and cannot be "
            f"resumed; {fix}"
        )
    if not (out / checkpoints.EXTRAS).exists():
        if not finished:
            raise ValueError(
                f"{out} holds an unfinished run without {checkpoints.EXTRAS} (the SG modules' "
                f"and the optimizer's state), so it cannot be resumed; restore that file, or "
                f"{fix}"
            )
        try:
            model.load_state_dict(model_state)
            return _history(out)
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(f"the checkpoint cannot be read ({first}); {fix}") from err
    extras, extras_meta = checkpoints.read_tensors(out / checkpoints.EXTRAS)
    if "optim_param_groups" not in extras_meta:
        raise ValueError(
            f"{out / checkpoints.EXTRAS} has no optimizer state (metadata "
            f"'optim_param_groups'): it was not written by training.train or is damaged; {fix}"
        )
    try:
        model.load_state_dict(model_state)
        rule.load_state_dict({k[5:]: v for k, v in extras.items() if k.startswith("rule/")})
        optim = {k: v for k, v in extras.items() if k.startswith("optim/")}
        optimizer.load_state_dict(_unflatten_optimizer(optim, extras_meta["optim_param_groups"]))
        return _history(out)
    except (RuntimeError, KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"the checkpoint cannot be resumed ({first}); {fix}") from err


def _meta(cfg: TrainConfig, model: MLP, out: Path, epoch: int, history: list[dict], device) -> dict:
    last = history[-1] if history else {}
    return {
        "name": out.name,
        "model": {
            "factory": FACTORY,
            "kwargs": {
                "depth": cfg.depth,
                "width": cfg.width,
                "activation": cfg.activation,
                "batchnorm": cfg.batchnorm,
                "in_features": model.block1.linear.in_features,
                "n_classes": model.out.out_features,
            },
        },
        "layers": model.layer_names,
        "layer_weights": {name: f"{name}.linear.weight" for name in model.layer_names},
        "method": {
            "name": cfg.method,
            "sg_layers": list(cfg.sg_positions),
            "sg_alpha": cfg.sg_alpha if cfg.method == "sgprop" else None,
            "loss": cfg.loss_name,
        },
        "dataset": cfg.data,
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "epoch": epoch,
        "complete": epoch >= cfg.epochs,
        "metrics": {k: v for k, v in last.items() if k != "epoch"},
        "wall_time_s": sum(float(row["time_s"]) for row in history),
        "device": str(device),
        "versions": checkpoints.versions(),
    }


def resume(
    cfg: TrainConfig,
    out: Path | None,
    model: MLP,
    rule: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: bool,
) -> tuple[list[dict], list[dict], int]:
    """The history, SG-quality rows and first epoch to train: from ``out`` if it holds this
    run (loading its state into ``model``, ``rule`` and ``optimizer``), else a fresh start."""
    if out is None or not (out / checkpoints.META).exists():
        return [], [], 1
    meta = checkpoints.read_meta(out)
    if stored_config(meta) != dataclasses.asdict(cfg) | {"snapshots": list(cfg.snapshots)}:
        raise ValueError(
            f"{out} holds a run with another configuration ({meta.get('config')}); "
            "choose another --out, or delete it to start over"
        )
    finished = int(meta.get("epoch", 0)) >= cfg.epochs
    history = _load_state(out, model, rule, optimizer, finished)
    start = int(meta.get("epoch", len(history))) + 1
    quality = [_quality_row(row) for row in checkpoints.read_table(out, checkpoints.SG_QUALITY)]
    if start <= cfg.epochs and progress:
        print(f"{out}: resuming after epoch {start - 1} of {cfg.epochs}", file=sys.stderr)
    return history, quality, start


def save(
    cfg: TrainConfig,
    out: Path,
    model: MLP,
    rule: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict],
    quality: list[dict],
    device: torch.device,
) -> None:
    """Write the checkpoint after the last epoch of ``history``, atomically; with the rule's
    and the optimizer's state (for resuming), and this epoch's snapshot if one is asked."""
    epoch = history[-1]["epoch"]
    optim_tensors, groups = _flatten_optimizer(optimizer.state_dict())
    extras = {f"rule/{k}": v for k, v in rule.state_dict().items()} | optim_tensors
    checkpoints.save(
        out,
        _meta(cfg, model, out, epoch, history, device),
        model.state_dict(),
        extras=extras,
        extras_metadata={"optim_param_groups": groups},
        history=history,
        snapshots={epoch: model.state_dict()} if epoch in cfg.snapshots else None,
        tables={checkpoints.SG_QUALITY: quality} if quality else None,
    )
