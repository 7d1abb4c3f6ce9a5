"""Weights files: read external ones safely, check their keys and shapes, hash them.

External weights are a ``.safetensors`` file, a ``.pt``/``.pth``/``.bin`` state_dict (read
with ``torch.load(weights_only=True)``, never unpickling objects) or a TorchScript archive.
Keys and shapes are compared with the model's before anything is loaded, from a safetensors
header alone where possible, and errors list the offending keys.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EXTERNAL_SUFFIXES",
    "header_shapes",
    "is_torchscript",
    "load_state",
    "match_shapes",
    "read_pickle_state",
    "state_shapes",
    "weights_sha256",
]

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
#: Weights files that :func:`repsim.loading.load` reads besides checkpoint directories.
EXTERNAL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ts", ".jit")


def weights_sha256(state: Mapping[str, torch.Tensor] | torch.nn.Module) -> str:
    """A content hash of a state_dict: names, dtypes, shapes and values, in key order.

    Two networks with equal weights hash equally however they were saved (safetensors,
    ``.pt``, rebuilt in memory), so extraction can tell "same weights" from "retrained".
    """
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with its code and constants)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_pickle_state(path: Path) -> dict[str, torch.Tensor]:
    """A ``.pt``/``.pth`` state_dict, unpickled with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds pickled Python objects, not just tensors (probably a whole model "
            "saved with torch.save(model)); repsim does not unpickle arbitrary objects because "
            "that can run any code. Where you trust the file, re-save its weights: "
            "torch.save(model.state_dict(), 'weights.pt') or "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable PyTorch file: {err}") from err
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k in _STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)]
        if nested:  # a training checkpoint {"state_dict": ..., "epoch": ...}
            obj = obj[nested[0]]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        found = type(obj).__name__
        if isinstance(obj, Mapping):
            found = "dict with keys " + ", ".join(map(repr, list(obj)[:8]))
        raise ValueError(
            f"{path} is not a state_dict (a mapping from names to tensors): found {found}. "
            f"Save model.state_dict(), or a dict holding it under one of {_STATE_DICT_KEYS}"
        )
    return dict(obj)


def _describe_keys(keys: Sequence[str], shapes: Mapping[str, Any], limit: int = 12) -> str:
    listed = [f"{k} {tuple(shapes[k])}" for k in list(keys)[:limit]]
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(listed) + more


def match_shapes(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    *,
    strict: bool,
    source: str,
    warn: bool = True,
) -> str:
    """Check a file's key → shape against a model's; the prefix to strip from the file's keys.

    Raises ValueError listing mis-shaped keys (always) and missing or unexpected keys
    (``strict``); warns about the latter otherwise.
    """
    prefix = ""
    if not set(found) & set(expected):
        for p in ("module.", "model.", "_orig_mod."):  # DataParallel, wrappers, compile
            if found and all(k.startswith(p) for k in found):
                prefix = p
                break
    found = {k[len(prefix) :]: tuple(v) for k, v in found.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [k for k in expected if k in found and found[k] != tuple(expected[k])]
    problems = []
    if mismatched:
        problems.append(
            "shape mismatch: "
            + ", ".join(
                f"{k} is {found[k]} in the file but {tuple(expected[k])} in the model"
                for k in mismatched[:12]
            )
        )
    if strict and missing:
        problems.append("missing from the file: " + _describe_keys(missing, expected))
    if strict and unexpected:
        problems.append("not in the model: " + _describe_keys(unexpected, found))
    if problems:
        hint = (
            "check that the factory and its kwargs build the architecture the weights came "
            "from (e.g. depth, width)"
        )
        if not mismatched:
            hint += "; strict=False (--no-strict) loads the keys that do match"
        raise ValueError(
            f"weights in {source} do not fit the model: " + "; ".join(problems) + f". {hint}"
        )
    if warn and (missing or unexpected):
        warnings.warn(
            f"strict=False: {len(missing)} model keys left at their initial values "
            f"({', '.join(missing[:5])}), {len(unexpected)} file keys ignored "
            f"({', '.join(unexpected[:5])})",
            stacklevel=4,
        )
    return prefix


def state_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key → shape of a state_dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err


def load_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool, source: str
) -> None:
    """``load_state_dict`` with errors that list the offending keys and shapes."""
    expected = model.state_dict()
    prefix = match_shapes(state_shapes(expected), state_shapes(state), strict=strict, source=source)
    state = {k[len(prefix) :]: v for k, v in state.items()}
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
