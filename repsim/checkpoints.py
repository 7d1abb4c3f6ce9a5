"""Checkpoint directories (DESIGN.md, Contract 1): write them atomically, read their files.

A checkpoint is a directory::

    <run>/
      checkpoint.json      what the model is and how it was made
      model.safetensors    the network's state_dict (no pickle)
      extras.safetensors   optional: rule state (SG modules, feedback), optimizer state
      history.csv          optional: one row per epoch
      snapshots/           optional: epoch-<N>.safetensors, weights kept at chosen epochs

:func:`save` writes the whole directory beside its destination and renames it into place,
so a reader (or a resumed run) sees either the previous complete checkpoint or the new one,
never a mixture.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT_VERSION", "read_history", "read_meta", "read_tensors", "save", "versions"]

FORMAT_VERSION = 1
META = "checkpoint.json"
MODEL = "model.safetensors"
EXTRAS = "extras.safetensors"
HISTORY = "history.csv"
SNAPSHOTS = "snapshots"


def versions() -> dict[str, str]:
    """Versions of the software that matters for reproducing a result."""
    import platform

    import numpy

    import repsim

    return {
        "repsim": repsim.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata=None) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
        str(path),
        metadata=dict(metadata) if metadata else None,
    )


def _recover(path: Path) -> None:
    """Put back a complete previous checkpoint if a save died between its two renames."""
    if path.exists():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and (olds[-1] / META).is_file():
        os.replace(olds[-1], path)


def save(
    path: str | os.PathLike,
    meta: Mapping[str, Any],
    model_state: Mapping[str, torch.Tensor],
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    extras_metadata: Mapping[str, str] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    snapshots: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any previous one at ``path``.

    Snapshots already in the previous checkpoint are kept (hard-linked, not copied); those
    in ``snapshots`` (epoch → state_dict) are added.

    Parameters
    ----------
    meta
        The content of ``checkpoint.json``; ``format_version`` is added.
    model_state
        The network's state_dict.
    extras, extras_metadata
        Optional tensors and string metadata for ``extras.safetensors``.
    history
        Rows of ``history.csv`` (dicts with the same keys).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        (tmp / META).write_text(
            json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2, default=str) + "\n"
        )
        _save_tensors(model_state, tmp / MODEL)
        if extras:
            _save_tensors(extras, tmp / EXTRAS, extras_metadata)
        if history:
            with (tmp / HISTORY).open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(history[0]))
                writer.writeheader()
                writer.writerows(history)
        if (path / SNAPSHOTS).is_dir() or snapshots:
            (tmp / SNAPSHOTS).mkdir()
        if (path / SNAPSHOTS).is_dir():
            for old in (path / SNAPSHOTS).iterdir():
                try:
                    os.link(old, tmp / SNAPSHOTS / old.name)
                except OSError:  # a file system without hard links
                    shutil.copy2(old, tmp / SNAPSHOTS / old.name)
        for epoch, state in (snapshots or {}).items():
            _save_tensors(state, tmp / SNAPSHOTS / f"epoch-{epoch}.safetensors")
        if path.exists():
            # rename cannot replace a non-empty directory: move the old one aside first
            # (_recover puts it back if we die between the two renames)
            old = path.parent / f".{path.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``checkpoint.json`` of a checkpoint directory."""
    path = Path(path)
    _recover(path)
    file = path / META
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory: it has no {META}")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); the checkpoint is damaged") from err
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise ValueError(f"{file}: expected a JSON object with a 'format_version' key")
    return meta


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and string metadata of a safetensors file (never unpickles)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err


def read_history(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a checkpoint's ``history.csv`` (empty when there is none)."""
    file = Path(path) / HISTORY
    if not file.is_file():
        return []
    with file.open(newline="") as f:
        return list(csv.DictReader(f))
