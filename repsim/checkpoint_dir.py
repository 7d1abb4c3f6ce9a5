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
never a mixture. :func:`discover` finds the checkpoints under a directory. Rebuilding the
network from one is :mod:`repsim.loading`'s; import all of it from :mod:`repsim.checkpoints`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from repsim import _atomic

__all__ = [
    "EXTRAS",
    "FORMAT_VERSION",
    "HISTORY",
    "META",
    "MODEL",
    "SG_QUALITY",
    "SNAPSHOTS",
    "check_destination",
    "discover",
    "read_history",
    "read_meta",
    "read_table",
    "read_tensors",
    "save",
    "versions",
]

FORMAT_VERSION = 1
META = "checkpoint.json"
MODEL = "model.safetensors"
EXTRAS = "extras.safetensors"
HISTORY = "history.csv"
#: Optional tidy table (step, epoch, position, measure, value) of synthetic-gradient quality.
SG_QUALITY = "sg_quality.csv"
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
    """Finish a save that died between its two renames; remove dead writers' temporaries."""
    try:
        _atomic.recover(path, complete=META)
        if path.parent.is_dir():
            _atomic.clean_stale(path.parent, path.name)
    except OSError:  # a read-only tree: read what is there; a writer will fail clearly
        pass


def _is_ours(path: Path) -> bool:
    """Whether directory ``path`` is a checkpoint (its ``checkpoint.json`` says so)."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format_version" in meta


def check_destination(path: str | os.PathLike) -> Path:
    """Refuse to write a checkpoint over anything that is not one; return the path to use.

    ``path`` may be missing, an empty directory, or a checkpoint directory (which is then
    replaced, keeping files it holds that a save does not write). A file, or a directory
    with content but no ``checkpoint.json`` of ours, is refused: repsim deletes nothing it
    did not write. A save killed between its two renames is completed first.

    Raises
    ------
    ValueError
        ``path`` (or a directory above it) is a file, or a directory that is not a
        checkpoint.
    PermissionError
        Nothing can be written beside ``path``.
    """
    path = Path(path).expanduser()
    if path.is_symlink():
        path = path.resolve()  # write where the link points, keep the link
    for above in path.parents:
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                raise ValueError(f"cannot write {path}: {above} is a file, not a directory")
            break
    _recover(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{path} is a file, not a checkpoint directory; choose another output directory"
        )
    if path.is_dir() and not _is_ours(path):
        content = sorted(p.name for p in path.iterdir())
        if content:
            shown = ", ".join(content[:5]) + (", …" if len(content) > 5 else "")
            raise ValueError(
                f"{path} exists and is not a checkpoint (it holds {shown} and no {META} "
                "written by repsim); nothing was changed. Choose a new or empty output "
                "directory"
            )
    try:  # find a read-only file system or directory now, not after an epoch of work
        _atomic.make_temp(path.parent, path.name).rmdir()
    except OSError as err:
        raise PermissionError(
            f"cannot write a checkpoint at {path}: creating a directory in {path.parent} "
            f"failed ({err.strerror or err}); choose an output directory where you can write"
        ) from err
    return path


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (copies where links are unsupported)."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
    else:
        try:
            os.link(src, dst)
        except OSError:  # a file system without hard links
            shutil.copy2(src, dst)


def save(
    path: str | os.PathLike,
    meta: Mapping[str, Any],
    model_state: Mapping[str, torch.Tensor],
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    extras_metadata: Mapping[str, str] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    snapshots: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically, replacing any previous one at ``path``.

    Snapshots already in the previous checkpoint are kept (hard-linked, not copied); those
    in ``snapshots`` (epoch → state_dict) are added. So are other files a user put in the
    previous checkpoint (an ``activations.zarr``, notes). ``path`` must be missing, empty,
    or a checkpoint (:func:`check_destination`): anything else is refused, never replaced.

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
    tables
        Other CSV files: file name (e.g. :data:`SG_QUALITY`) → rows.
    """
    path = check_destination(path)
    tmp = _atomic.make_temp(path.parent, path.name)
    try:
        if path.is_dir():  # keep what a save does not rewrite (snapshots, a user's files)
            for old in path.iterdir():
                if old.name not in (META, MODEL, EXTRAS, HISTORY):
                    _link_tree(old, tmp / old.name)
        _save_tensors(model_state, tmp / MODEL)
        if extras:
            _save_tensors(extras, tmp / EXTRAS, extras_metadata)
        for name, rows in ({HISTORY: history} | dict(tables or {})).items():
            if not rows:
                continue
            if Path(name).name != name or not name.endswith(".csv"):
                raise ValueError(f"table names are plain file names ending in .csv, got {name!r}")
            # a file kept from the previous checkpoint is a hard link: never write through it
            (tmp / name).unlink(missing_ok=True)
            with (tmp / name).open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if snapshots:
            (tmp / SNAPSHOTS).mkdir(exist_ok=True)
        for epoch, state in (snapshots or {}).items():
            # a linked file of the same name shares its data with the previous checkpoint
            (tmp / SNAPSHOTS / f"epoch-{epoch}.safetensors").unlink(missing_ok=True)
            _save_tensors(state, tmp / SNAPSHOTS / f"epoch-{epoch}.safetensors")
        # written last: a temporary with checkpoint.json is complete (see _atomic.recover)
        (tmp / META).write_text(
            json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2, default=str) + "\n"
        )
        _atomic.swap(tmp, path, tmp, path.name)
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
    return read_table(path, HISTORY)


def read_table(path: str | os.PathLike, name: str) -> list[dict[str, str]]:
    """Rows (as strings) of the CSV file ``name`` of a checkpoint (empty when absent)."""
    file = Path(path) / name
    if not file.is_file():
        return []
    with file.open(newline="") as f:
        return list(csv.DictReader(f))


def discover(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """Every checkpoint directory under ``root``, as ``(run name, path)`` pairs.

    A run's name is its path relative to ``root`` (``bp``, ``bp/seed-1``); ``root`` itself,
    when it is a checkpoint, is named after its directory. Zarr stores, snapshots and
    hidden (temporary) directories are not searched.

    Examples
    --------
    >>> [name for name, _ in discover("ckpt")]  # doctest: +SKIP
    ['bp', 'dfa', 'sg-full', 'sg-single']
    """
    root = Path(root).expanduser().resolve()
    _recover(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    if (root / META).is_file():
        return [(root.name, root)]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        for d in dirnames:  # a save that died between its two renames left only .<run>.old-*
            if d.startswith(".") and ".old-" in d:
                _recover(here / d[1:].rsplit(".old-", 1)[0])
        dirnames[:] = [d for d in os.listdir(here) if (here / d).is_dir()]
        skip = [d for d in dirnames if d.startswith(".") or d.endswith(".zarr") or d == SNAPSHOTS]
        dirnames[:] = sorted(set(dirnames) - set(skip))
        for d in list(dirnames):
            if (here / d / META).is_file():
                found.append(((here / d).relative_to(root).as_posix(), here / d))
                dirnames.remove(d)  # a checkpoint does not contain other checkpoints
    return sorted(found)
