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

import contextvars
import csv
import dataclasses
import difflib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from repsim import _atomic

__all__ = [
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "MODEL_MODULES",
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


# ------------------------------------------------------------------- loading

#: Modules whose ``torch.nn.Module`` classes a ``checkpoint.json`` may name as its
#: ``model.factory`` (with their submodules). Functions join them only through
#: :func:`model_factory`. Anything else is built only when the user names it
#: (``model=``/``--model``) or passes ``trust=True``/``--trust``: a JSON file may choose a
#: model to build, never code to run.
MODEL_MODULES = ("torch.nn", "training.model")
#: Default ceiling on a model's parameters and buffers, checked before they are allocated.
MAX_MODEL_BYTES = 4 << 30

_FACTORIES: dict[int, Callable[..., Any]] = {}  # id → function registered by model_factory
# set while a factory named by a file runs: a load() it calls trusts nothing it is given
_BUILDING_FROM_FILE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "_BUILDING_FROM_FILE", default=False
)


def model_factory(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """Register a function that builds a model, so that a ``checkpoint.json`` may name it.

    Use it as a decorator on a function that only constructs a ``torch.nn.Module`` from
    JSON-like arguments. The function's module must be imported before the checkpoint is
    loaded, or be in :data:`MODEL_MODULES` (a checkpoint cannot make repsim import it).

    Examples
    --------
    >>> @model_factory
    ... def tiny(width: int = 4) -> torch.nn.Module:
    ...     return torch.nn.Linear(3, width)
    """
    _FACTORIES[id(fn)] = fn
    return fn


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


def _within(module: str, packages: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _is_model_constructor(obj: Any) -> bool:
    """A registered factory, or a ``torch.nn.Module`` class from :data:`MODEL_MODULES`."""
    if _FACTORIES.get(id(obj)) is obj:
        return True
    return (
        isinstance(obj, type)
        and issubclass(obj, torch.nn.Module)
        and _within(obj.__module__, MODEL_MODULES)
    )


def resolve_factory(spec: str, *, trust: bool = False) -> Callable[..., Any]:
    """The callable named by ``"package.module:attribute"``.

    Unless ``trust`` is true it must be a model constructor: a ``torch.nn.Module`` class
    defined in :data:`MODEL_MODULES`, or a function registered with :func:`model_factory`;
    and its module must be one of those or already imported (importing runs code).

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
        f"model factory {spec!r} is not a model constructor that a checkpoint may name (a "
        f"torch.nn.Module class from {' or '.join(MODEL_MODULES)}, or a function registered "
        "with @repsim.checkpoints.model_factory); building it could run any code. If you "
        "trust this checkpoint, pass trust=True (command line: --trust), or name the factory "
        "yourself with model=/--model"
    )
    if not trust and not (_within(module_name, MODEL_MODULES) or module_name in sys.modules):
        raise PermissionError(refusal + f" (importing {module_name} would run its code)")
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
    if not trust and not _is_model_constructor(obj):
        kind = "class" if isinstance(obj, type) else type(obj).__name__
        found = f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"
        raise PermissionError(refusal + f" (it resolves to {kind} {found})")
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


def _match(
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


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err


def _load_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool, source: str
) -> None:
    """``load_state_dict`` with errors that list the offending keys and shapes."""
    expected = model.state_dict()
    prefix = _match(_shapes(expected), _shapes(state), strict=strict, source=source)
    state = {k[len(prefix) :]: v for k, v in state.items()}
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def _factory_name(factory: Any) -> str:
    if isinstance(factory, str):
        return factory
    return (
        f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"
    )


def _is_plain(value: Any) -> bool:
    """A JSON scalar, or a list or string-keyed dict of them (no object, no callable)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _construct(build: Callable, kwargs: dict, name: str, device: str | None) -> Any:
    """``build(**kwargs)`` (on ``device``), its failures as one-line ValueErrors."""
    try:
        if device is None:
            return build(**kwargs)
        with torch.device(device):
            return build(**kwargs)
    except Exception as err:  # a factory's own checks raise anything: report them all alike
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"model factory {name!r} failed with kwargs {kwargs}: {type(err).__name__}: {first}"
        ) from err


def _build(
    factory: str | Callable,
    kwargs: Mapping[str, Any] | None,
    *,
    trust: bool,
    from_file: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    strict: bool = True,
    source: str = "",
    max_bytes: int = MAX_MODEL_BYTES,
) -> torch.nn.Module:
    """The model, built first on the meta device and checked before anything is allocated.

    ``from_file``: factory or kwargs come from ``checkpoint.json`` (kwargs must be JSON
    values, and a ``load`` the factory calls trusts nothing). ``shapes``: key → shape of the
    weights to load, compared with the model's before it is allocated.
    """
    build = factory if callable(factory) else resolve_factory(factory, trust=trust)
    name = _factory_name(factory)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"model kwargs must be a JSON object, got {kwargs!r}")
    kwargs = dict(kwargs or {})
    if from_file and (bad := [k for k, v in kwargs.items() if not _is_plain(v)]):
        raise ValueError(f"model kwargs {', '.join(bad)} are not JSON values")
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # some builtins have none
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            raise ValueError(
                f"model factory {name!r} rejected kwargs {kwargs}: {err}; "
                f"its parameters are {signature}"
            ) from err
    token = _BUILDING_FROM_FILE.set(_BUILDING_FROM_FILE.get() or from_file)
    try:
        try:
            meta = _construct(build, kwargs, name, "meta")
        except ValueError:
            meta = None  # it cannot be built on the meta device: build it for real below
        if meta is not None:
            if not isinstance(meta, torch.nn.Module):
                raise ValueError(
                    f"model factory {name!r} returned a {type(meta).__name__}, "
                    "not a torch.nn.Module"
                )
            if shapes is not None:
                _match(_shapes(meta.state_dict()), shapes, strict=strict, source=source, warn=False)
            size = sum(t.numel() * t.element_size() for t in (*meta.parameters(), *meta.buffers()))
            if size > max_bytes:
                raise ValueError(
                    f"model factory {name!r} with kwargs {kwargs} builds a model of "
                    f"{size / 2**30:,.1f} GiB of parameters and buffers, over the limit of "
                    f"{max_bytes / 2**30:,.1f} GiB; if that is intended, raise it with "
                    "max_model_bytes= (command line: --max-model-gb)"
                )
            del meta
        model = _construct(build, kwargs, name, None)
    finally:
        _BUILDING_FROM_FILE.reset(token)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"model factory {name!r} returned a {type(model).__name__}, not a torch.nn.Module"
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
    max_model_bytes: int | None = None,
) -> tuple[torch.nn.Module, CheckpointInfo]:
    """Rebuild a network from a checkpoint directory or an external weights file.

    Nothing is unpickled except tensors: weights come from safetensors or from
    ``torch.load(weights_only=True)``. A ``checkpoint.json`` may only name a model
    constructor (:func:`resolve_factory`) with JSON kwargs, unless ``trust``.

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
        Let ``checkpoint.json`` name any callable as its factory, not only a model
        constructor (see :func:`resolve_factory`): only for checkpoints you trust.
    strict
        Refuse weights files with missing or unexpected keys (shape mismatches are
        always refused).
    max_model_bytes
        Refuse a model whose parameters and buffers exceed this many bytes (default
        :data:`MAX_MODEL_BYTES`, 4 GiB), before it is allocated. The model is first built
        on the meta device and its keys and shapes checked against the weights file.

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
    if _BUILDING_FROM_FILE.get():  # called by a factory that a file named: trust nothing
        trust, user_named = False, False
    else:
        user_named = model is not None
    max_bytes = MAX_MODEL_BYTES if max_model_bytes is None else max_model_bytes
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        meta = read_meta(path)
        spec = meta.get("model") or {}
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"{path / META}: 'model' must be a JSON object such as "
                '{"factory": "training.model:MLP", "kwargs": {...}}, '
                f"got a {type(spec).__name__} ({spec!r})"
            )
        factory = model or spec.get("factory")
        if not factory:
            raise ValueError(
                f"{path / META} has no model.factory; pass model='package.module:callable'"
            )
        kwargs = model_kwargs if model_kwargs is not None else spec.get("kwargs")
        net = _build(
            factory,
            kwargs,
            trust=trust or user_named,
            from_file=not user_named or model_kwargs is None,
            shapes=_header_shapes(path / MODEL),
            strict=strict,
            source=str(path / MODEL),
            max_bytes=max_bytes,
        )
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
        net = _build(
            model,
            model_kwargs,
            trust=trust or user_named,
            from_file=not user_named,
            shapes=_shapes(state),
            strict=strict,
            source=str(path),
            max_bytes=max_bytes,
        )
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
        skip = [d for d in dirnames if d.startswith(".") or d.endswith(".zarr") or d == SNAPSHOTS]
        dirnames[:] = sorted(set(dirnames) - set(skip))
        for d in list(dirnames):
            if (here / d / META).is_file():
                found.append(((here / d).relative_to(root).as_posix(), here / d))
                dirnames.remove(d)  # a checkpoint does not contain other checkpoints
    return sorted(found)
