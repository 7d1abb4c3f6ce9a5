"""The configuration of one training run: a frozen dataclass, and its command-line flags.

Every field determines the run's result (the device aside); a checkpoint stores it, and a
rerun with another configuration is refused rather than resumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from repsim import datasets
from training.model import ACTIVATIONS
from training.rules import LOSSES, METHODS, SG_MODULES

__all__ = [
    "LR_SCHEDULES",
    "TrainConfig",
    "add_config_arguments",
    "config_from_args",
    "lr_factor",
    "stored_config",
]

#: ``constant``: the learning rates as given; ``cosine``: decayed to 0 over the run.
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The multiple of each base learning rate at optimizer step ``step`` of ``total``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    return 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (the device aside).

    ``sg_layers``: ``"middle"`` (block ``depth // 2 + 1``, the paper's 11 of 20), ``"all"``,
    or 1-based blocks such as ``"11"`` or ``"5,11"``; used by ``sg`` and ``sgprop``.
    ``loss``: ``"auto"`` is softmax cross-entropy (``ce``), except for ``kickback``, whose
    signal vanishes under it, where it is per-class sigmoid cross-entropy (``bce``).
    ``weight_decay``: an L2 penalty on the Linear weights, added to the gradient (not
    decoupled), so that weight norms track what each layer computes.
    ``sg_lr``: the learning rate of the synthetic-gradient modules; 0 (the default) means
    ``lr``, the paper's setting ("Adam with a learning rate of 3e-5 for both the network and
    the SG modules"). An explicit departure from the paper, never a silent one.
    ``sg_module``: the form of each SG module: ``"linear"`` (the paper's experiments:
    ``SG(h, y) = hA + yB + C``) or ``"sigmoid"`` (``d ⊙ σ(hA) + yB + C``, which the paper's
    Section 3 recommends for log loss); see :class:`training.rules.SyntheticGradients`.
    ``lr_schedule``: ``"constant"`` (the paper states no schedule) or ``"cosine"``: every
    learning rate decays as ``0.5 (1 + cos(π t / T))`` over the run's ``T`` optimizer steps.
    ``sg_quality_every``: every N optimizer steps (0: never), measure how close each
    synthetic gradient and its bootstrapped target are to the true gradient on the current
    batch (:meth:`training.rules.SyntheticGradients.quality`; changes nothing) and write the
    tidy table ``sg_quality.csv`` (step, epoch, position, measure, value) into the checkpoint.
    """

    method: str = "bp"
    sg_layers: str = "middle"
    sg_alpha: float = 1.0
    depth: int = 20
    width: int = 512
    activation: str = "relu"
    batchnorm: bool = True
    loss: str = "auto"
    data: str = "mnist-5k"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-4
    sg_lr: float = 0.0
    sg_module: str = "linear"
    lr_schedule: str = "constant"
    weight_decay: float = 1e-4
    seed: int = 0
    snapshots: tuple[int, ...] = ()
    sg_quality_every: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown method {self.method!r}: expected one of {', '.join(METHODS)}"
            )
        for name in ("depth", "width", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (
            isinstance(self.sg_quality_every, bool)
            or not isinstance(self.sg_quality_every, int)
            or self.sg_quality_every < 0
        ):
            raise ValueError(
                f"sg_quality_every must be a whole number of steps >= 0 (0: off), got {self.sg_quality_every!r}"
            )
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs two examples)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        if self.loss != "auto" and self.loss not in LOSSES:
            raise ValueError(
                f"unknown loss {self.loss!r}: expected auto or one of {', '.join(LOSSES)}"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**32
        ):
            raise ValueError(f"seed must be an integer from 0 to 2**32 - 1, got {self.seed!r}")
        if not math.isfinite(self.sg_alpha):
            raise ValueError(f"sg_alpha must be a finite number, got {self.sg_alpha!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.sg_module not in SG_MODULES:
            raise ValueError(
                f"unknown sg_module {self.sg_module!r}: expected one of {', '.join(SG_MODULES)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.lr_schedule!r}: expected one of {', '.join(LR_SCHEDULES)}"
            )
        if not (self.sg_lr >= 0 and math.isfinite(self.sg_lr)):
            raise ValueError(
                f"sg_lr must be a positive number, or 0 for the network's lr, got {self.sg_lr!r}"
            )
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if bad := [e for e in self.snapshots if not 1 <= e <= self.epochs]:
            raise ValueError(f"snapshots must be epochs from 1 to {self.epochs}, got {bad}")
        datasets.check_name(self.data)
        self.sg_positions  # noqa: B018  (validates sg_layers)

    @property
    def sg_positions(self) -> tuple[int, ...]:
        """The 1-based blocks followed by a synthetic gradient (empty unless sg/sgprop)."""
        if self.method not in ("sg", "sgprop"):
            return ()
        if self.sg_layers == "middle":
            return (self.depth // 2 + 1,)
        if self.sg_layers == "all":
            return tuple(range(1, self.depth + 1))
        try:
            positions = tuple(int(k) for k in self.sg_layers.split(","))
        except ValueError:
            raise ValueError(
                f"sg_layers must be 'middle', 'all' or block numbers like '11' or '5,11', "
                f"got {self.sg_layers!r}"
            ) from None
        if bad := [k for k in positions if not 1 <= k <= self.depth]:
            raise ValueError(
                f"SG layer {bad[0]} is out of range: blocks are numbered 1 to {self.depth} "
                f"(the depth); an SG after block k sits between block k and block k+1"
            )
        return positions

    @property
    def loss_name(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "mse" if self.method == "kickback" else "ce"


def stored_config(meta: dict) -> dict | None:
    """A checkpoint's config, with the defaults of TrainConfig fields added since it was
    written (so that adding an option does not orphan older checkpoints)."""
    stored = meta.get("config")
    if not isinstance(stored, dict):
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {k: stored.get(k, defaults[k]) for k in defaults} | {
        k: v for k, v in stored.items() if k not in defaults
    }


# ----------------------------------------------------------------------- CLI


def _field_type(field: dataclasses.Field) -> Callable[[str], Any]:
    """An argparse ``type`` for a TrainConfig field (annotations are strings here)."""
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind.startswith("tuple"):
        return lambda text: tuple(int(v) for v in text.split(",") if v)
    return {"int": int, "float": float, "str": str, "bool": bool}[kind]


def add_config_arguments(
    parser: argparse.ArgumentParser,
    defaults: TrainConfig | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """One typed ``--flag`` per TrainConfig field. With ``defaults=None`` a flag not given
    is absent from the parsed namespace (for overrides of a preset)."""
    choices = {
        "method": METHODS,
        "activation": tuple(ACTIVATIONS),
        "loss": ("auto", *LOSSES),
        "lr_schedule": LR_SCHEDULES,
        "sg_module": SG_MODULES,
    }
    for field in dataclasses.fields(TrainConfig):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        if defaults is None:
            default, shown = argparse.SUPPRESS, "the preset's"
        else:
            default = getattr(defaults, field.name)
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        convert = _field_type(field)
        if convert is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(
                flag,
                type=convert,
                default=default,
                choices=choices.get(field.name),
                help=f"default: {shown}",
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
