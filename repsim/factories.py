"""Which model constructors a checkpoint may name, and how a name becomes a callable.

Trust is a short list of constructors, not of packages: a ``checkpoint.json`` may name a
``torch.nn.Module`` class from :data:`MODEL_MODULES` or a function registered with
:func:`model_factory`, with JSON keyword arguments; anything else only when the user names
it or passes ``trust``. Building the model is :func:`repsim.loading.load`'s.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["MODEL_MODULES", "check_kwargs", "factory_name", "model_factory", "resolve_factory"]

#: Modules whose ``torch.nn.Module`` classes a ``checkpoint.json`` may name as its
#: ``model.factory`` (with their submodules). Functions join them only through
#: :func:`model_factory`. Anything else is built only when the user names it
#: (``model=``/``--model``) or passes ``trust=True``/``--trust``: a JSON file may choose a
#: model to build, never code to run.
MODEL_MODULES = ("torch.nn", "training.model")

_FACTORIES: dict[int, Callable[..., Any]] = {}  # id → function registered by model_factory


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


def factory_name(factory: Any) -> str:
    """``"module:callable"`` for a spec or a callable (what :class:`repsim.loading.CheckpointInfo` records)."""
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


def check_kwargs(
    build: Callable, kwargs: Mapping[str, Any] | None, *, name: str, from_file: bool
) -> dict[str, Any]:
    """``kwargs`` as a dict, checked to be a mapping that ``build``'s signature accepts.

    ``from_file``: the kwargs come from ``checkpoint.json`` and must be JSON values.
    """
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
    return kwargs
