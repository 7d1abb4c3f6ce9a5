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
import dataclasses
import difflib
import hashlib
import importlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "TRUSTED_PACKAGES",
    "CheckpointInfo",
    "discover",
    "load",
    "read_history",
    "read_meta",
    "read_tensors",
    "resolve_factory",
    "save",
    "versions",
    "weights_sha256",
]

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


# ------------------------------------------------------------------- loading

#: Packages whose callables a ``checkpoint.json`` may name as its ``model.factory``.
#: Anything else is imported only when the user asks for it (``model=``/``--model``) or
#: passes ``trust=True``/``--trust``: a JSON file must not choose what code repsim runs.
TRUSTED_PACKAGES = ("repsim", "training", "torch.nn")

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
_EXTERNAL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ts", ".jit")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`load` found out about a checkpoint besides the network itself.

    Attributes
    ----------
    name
        The run's name (``checkpoint.json``'s ``name``, else the directory or file stem).
    path
        The checkpoint directory or weights file, absolute.
    layers
        Ordered module names whose outputs are the hidden layers.
    layer_weights
        Layer → state_dict key of its linear map, where known (``checkpoint.json``).
    method, dataset, metrics
        As recorded in ``checkpoint.json`` (empty for external weights).
    factory
        ``"module:callable"`` that built the network, or ``"torchscript"``.
    weights_sha256
        Content hash of the weights (see :func:`weights_sha256`).
    meta
        The whole ``checkpoint.json`` (empty for external weights).
    """

    name: str
    path: Path
    layers: tuple[str, ...]
    layer_weights: dict[str, str]
    method: dict[str, Any]
    dataset: str | None
    metrics: dict[str, Any]
    factory: str
    weights_sha256: str
    meta: dict[str, Any]


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


def _trusted(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in TRUSTED_PACKAGES)


def resolve_factory(spec: str, *, trust: bool = False) -> Callable[..., Any]:
    """The callable named by ``"package.module:attribute"``.

    Unless ``trust`` is true, the module must belong to :data:`TRUSTED_PACKAGES` and so
    must whatever the attribute resolves to (``torch.nn.functional:torch.load`` is refused
    though it is reachable from ``torch.nn``).

    Examples
    --------
    >>> resolve_factory("torch.nn:Linear")
    <class 'torch.nn.modules.linear.Linear'>
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(
            f"model factory {spec!r} is not of the form 'package.module:callable' "
            "(e.g. 'training.model:MLP')"
        )
    module_name, attr = spec.split(":")
    parts = attr.split(".")
    if any(p.startswith("_") for p in parts + module_name.split(".")):
        raise ValueError(f"model factory {spec!r}: private names (starting with '_') are refused")
    refusal = (
        f"model factory {spec!r} is outside the trusted packages {', '.join(TRUSTED_PACKAGES)}; "
        "importing it would run its code. If you trust this checkpoint, pass trust=True "
        "(command line: --trust), or name the factory yourself with model=/--model"
    )
    if not trust and not _trusted(module_name):
        raise PermissionError(refusal)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} for model factory {spec!r} ({err}); install the "
            "package that defines the model or add its directory to PYTHONPATH"
        ) from err
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            where = ".".join([module_name, *parts[:i]])
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"model factory {spec!r}: {where} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model factory {spec!r} is not callable (it is a {type(obj).__name__})")
    if not trust and not _trusted(getattr(obj, "__module__", None) or ""):
        raise PermissionError(refusal + f" (it resolves to {getattr(obj, '__module__', '?')})")
    return obj


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _read_pickle_state(path: Path) -> dict[str, torch.Tensor]:
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


def _load_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool, source: str
) -> None:
    """``load_state_dict`` with errors that list the offending keys and shapes."""
    expected = model.state_dict()
    state = dict(state)
    if not set(state) & set(expected):
        for prefix in ("module.", "model.", "_orig_mod."):  # DataParallel, wrappers, compile
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                break
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(
            "shape mismatch: "
            + ", ".join(
                f"{k} is {tuple(state[k].shape)} in the file but {tuple(expected[k].shape)} "
                "in the model"
                for k in mismatched[:12]
            )
        )
    if strict and missing:
        problems.append(
            "missing from the file: "
            + _describe_keys(missing, {k: v.shape for k, v in expected.items()})
        )
    if strict and unexpected:
        problems.append(
            "not in the model: "
            + _describe_keys(unexpected, {k: v.shape for k, v in state.items()})
        )
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
    if missing or unexpected:
        warnings.warn(
            f"strict=False: {len(missing)} model keys left at their initial values "
            f"({', '.join(missing[:5])}), {len(unexpected)} file keys ignored "
            f"({', '.join(unexpected[:5])})",
            stacklevel=3,
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def _factory_name(factory: Any) -> str:
    if isinstance(factory, str):
        return factory
    return (
        f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"
    )


def _build(
    factory: str | Callable, kwargs: Mapping[str, Any] | None, *, trust: bool
) -> torch.nn.Module:
    build = factory if callable(factory) else resolve_factory(factory, trust=trust)
    factory = _factory_name(factory)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"model kwargs must be a JSON object, got {kwargs!r}")
    try:
        model = build(**dict(kwargs or {}))
    except TypeError as err:
        raise ValueError(
            f"model factory {factory!r} rejected kwargs {dict(kwargs or {})}: {err}"
        ) from err
    if not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"model factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _check_layers(
    model: torch.nn.Module, layers: Sequence[str] | None, source: str
) -> tuple[str, ...]:
    if layers is None or isinstance(layers, str) or not layers:
        names = [n for n, m in model.named_modules() if n and not list(m.children())]
        raise ValueError(
            f"{source}: say which modules are the hidden layers with layers=[...] "
            f"(command line: --layers a,b); leaf modules of this model: {', '.join(names[:30])}"
        )
    return tuple(layers)


def load(
    path: str | os.PathLike,
    *,
    model: str | Callable[..., torch.nn.Module] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    trust: bool = False,
    strict: bool = True,
) -> tuple[torch.nn.Module, CheckpointInfo]:
    """Rebuild a network from a checkpoint directory or an external weights file.

    Nothing is unpickled except tensors: weights come from safetensors or from
    ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path
        A checkpoint directory (``checkpoint.json`` + ``model.safetensors``, Contract 1),
        a ``.safetensors`` file, a ``.pt``/``.pth``/``.bin`` state_dict, or a TorchScript
        archive.
    model
        ``"package.module:callable"`` that builds the architecture, or the callable itself
        (a class defined in a notebook). Required for external weights files; for a
        directory it replaces ``model.factory``. Given by you, it is trusted.
    model_kwargs
        Keyword arguments for ``model`` (default: ``model.kwargs`` of ``checkpoint.json``).
    layers
        Module names (dotted ``named_modules()`` paths) whose outputs are the hidden
        layers; default ``checkpoint.json``'s ``layers``. Required for external weights.
    trust
        Allow ``checkpoint.json`` to name a factory outside :data:`TRUSTED_PACKAGES`.
    strict
        Refuse weights files with missing or unexpected keys (shape mismatches are
        always refused).

    Returns
    -------
    (torch.nn.Module, CheckpointInfo)
        The network on the CPU in eval mode, and its description.

    Examples
    --------
    >>> net, info = load("ckpt/bp")  # doctest: +SKIP
    >>> info.layers[:2], info.metrics["test_accuracy"]  # doctest: +SKIP
    (('block1', 'block2'), 0.933)
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        meta = read_meta(path)
        spec = meta.get("model") or {}
        factory = model or spec.get("factory")
        if not factory:
            raise ValueError(
                f"{path / META} has no model.factory; pass model='package.module:callable'"
            )
        kwargs = model_kwargs if model_kwargs is not None else spec.get("kwargs")
        net = _build(factory, kwargs, trust=trust or model is not None)
        state, _ = read_tensors(path / MODEL)
        _load_state(net, state, strict=strict, source=str(path / MODEL))
        source_layers = layers if layers is not None else meta.get("layers")
        info = CheckpointInfo(
            name=str(meta.get("name") or path.name),
            path=path,
            layers=_check_layers(net, source_layers, str(path)),
            layer_weights=dict(meta.get("layer_weights") or {}),
            method=dict(meta.get("method") or {}),
            dataset=meta.get("dataset"),
            metrics=dict(meta.get("metrics") or {}),
            factory=_factory_name(factory),
            weights_sha256=weights_sha256(net),
            meta=meta,
        )
        return net.eval(), info
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: give a checkpoint directory (with {META}) or a weights "
            f"file ({', '.join(_EXTERNAL_SUFFIXES)})"
        )
    if _is_torchscript(path):
        if model is not None:
            raise ValueError(
                f"{path} is a TorchScript archive: it carries its own architecture, drop model=/--model"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                net = torch.jit.load(str(path), map_location="cpu")
            except (RuntimeError, ValueError, OSError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(
                    f"{path} looks like a TorchScript archive but cannot be loaded ({first}); "
                    "is it damaged? Re-export it with torch.jit.save, or save the weights as a state_dict"
                ) from err
        factory = "torchscript"
    else:
        if path.suffix == ".safetensors":
            state, _ = read_tensors(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            state = _read_pickle_state(path)
        else:
            raise ValueError(
                f"{path}: unknown weights format {path.suffix!r}; repsim reads "
                f"{', '.join(_EXTERNAL_SUFFIXES)} files and checkpoint directories"
            )
        if model is None:
            raise ValueError(
                f"{path} holds weights but not the architecture: pass "
                "model='package.module:callable' (command line: --model pkg.mod:build) "
                "and, if it needs them, model_kwargs"
            )
        net = _build(model, model_kwargs, trust=True)
        _load_state(net, state, strict=strict, source=str(path))
        factory = _factory_name(model)
    info = CheckpointInfo(
        name=path.stem,
        path=path,
        layers=_check_layers(net, layers, str(path)),
        layer_weights={},
        method={},
        dataset=None,
        metrics={},
        factory=factory,
        weights_sha256=weights_sha256(net),
        meta={},
    )
    return net.eval(), info


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
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and not d.endswith(".zarr") and d != SNAPSHOTS
        )  # fmt: skip
        for d in list(dirnames):
            if (here / d / META).is_file():
                found.append(((here / d).relative_to(root).as_posix(), here / d))
                dirnames.remove(d)  # a checkpoint does not contain other checkpoints
    return sorted(found)
