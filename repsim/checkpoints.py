"""Checkpoints: the one place to import them from.

A checkpoint is a directory (DESIGN.md, Contract 1) written by :func:`save` and found by
:func:`discover`; :func:`load` rebuilds its network, or one from an external weights file.
The code lives in four modules, each one concern:

- :mod:`repsim.checkpoint_dir`: the directory's files, written atomically and read back;
- :mod:`repsim.factories`: which model constructors a ``checkpoint.json`` may name;
- :mod:`repsim.weights`: external weights files, key and shape checks, the weights hash;
- :mod:`repsim.loading`: :func:`load` and :class:`CheckpointInfo`.

Examples
--------
>>> from repsim import checkpoints
>>> [name for name, _ in checkpoints.discover("ckpt")]  # doctest: +SKIP
['bp', 'dfa', 'sg-full', 'sg-single']
>>> net, info = checkpoints.load("ckpt/bp")  # doctest: +SKIP
"""

from repsim.checkpoint_dir import (
    EXTRAS,
    FORMAT_VERSION,
    HISTORY,
    META,
    MODEL,
    SG_QUALITY,
    SNAPSHOTS,
    check_destination,
    discover,
    read_history,
    read_meta,
    read_table,
    read_tensors,
    save,
    versions,
)
from repsim.factories import MODEL_MODULES, model_factory, resolve_factory
from repsim.loading import MAX_MODEL_BYTES, CheckpointInfo, load
from repsim.weights import weights_sha256

__all__ = [
    "EXTRAS",
    "FORMAT_VERSION",
    "HISTORY",
    "MAX_MODEL_BYTES",
    "META",
    "MODEL",
    "MODEL_MODULES",
    "SG_QUALITY",
    "SNAPSHOTS",
    "CheckpointInfo",
    "check_destination",
    "discover",
    "load",
    "model_factory",
    "read_history",
    "read_meta",
    "read_table",
    "read_tensors",
    "resolve_factory",
    "save",
    "versions",
    "weights_sha256",
]
