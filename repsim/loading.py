"""Rebuild a network from a checkpoint directory or an external weights file.

:func:`load` reads what :mod:`repsim.checkpoint_dir` wrote (or a weights file,
:mod:`repsim.weights`), resolves the model constructor under :mod:`repsim.factories`'
rules, builds it on the meta device to check its size and shapes before allocating, then
loads the weights; :class:`CheckpointInfo` describes what it found.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from repsim import weights
from repsim.checkpoint_dir import META, MODEL, read_meta, read_tensors
from repsim.factories import check_kwargs, factory_name, resolve_factory

__all__ = ["MAX_MODEL_BYTES", "CheckpointInfo", "load"]

#: Default ceiling on a model's parameters and buffers, checked before they are allocated.
MAX_MODEL_BYTES = 4 << 30

# set while a factory named by a file runs: a load() it calls trusts nothing it is given
_BUILDING_FROM_FILE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "_BUILDING_FROM_FILE", default=False
)


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
        Content hash of the weights (see :func:`repsim.weights.weights_sha256`).
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
    name = factory_name(factory)
    kwargs = check_kwargs(build, kwargs, name=name, from_file=from_file)
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
                weights.match_shapes(
                    weights.state_shapes(meta.state_dict()),
                    shapes,
                    strict=strict,
                    source=source,
                    warn=False,
                )
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
            shapes=weights.header_shapes(path / MODEL),
            strict=strict,
            source=str(path / MODEL),
            max_bytes=max_bytes,
        )
        state, _ = read_tensors(path / MODEL)
        weights.load_state(net, state, strict=strict, source=str(path / MODEL))
        source_layers = layers if layers is not None else meta.get("layers")
        info = CheckpointInfo(
            name=str(meta.get("name") or path.name),
            path=path,
            layers=_check_layers(net, source_layers, str(path)),
            layer_weights=dict(meta.get("layer_weights") or {}),
            method=dict(meta.get("method") or {}),
            dataset=meta.get("dataset"),
            metrics=dict(meta.get("metrics") or {}),
            factory=factory_name(factory),
            weights_sha256=weights.weights_sha256(net),
            meta=meta,
        )
        return net.eval(), info
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: give a checkpoint directory (with {META}) or a weights "
            f"file ({', '.join(weights.EXTERNAL_SUFFIXES)})"
        )
    if weights.is_torchscript(path):
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
            state = weights.read_pickle_state(path)
        else:
            raise ValueError(
                f"{path}: unknown weights format {path.suffix!r}; repsim reads "
                f"{', '.join(weights.EXTERNAL_SUFFIXES)} files and checkpoint directories"
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
            shapes=weights.state_shapes(state),
            strict=strict,
            source=str(path),
            max_bytes=max_bytes,
        )
        weights.load_state(net, state, strict=strict, source=str(path))
        factory = factory_name(model)
    info = CheckpointInfo(
        name=path.stem,
        path=path,
        layers=_check_layers(net, layers, str(path)),
        layer_weights={},
        method={},
        dataset=None,
        metrics={},
        factory=factory,
        weights_sha256=weights.weights_sha256(net),
        meta={},
    )
    return net.eval(), info
