"""Recording layers: parse layer names, hook the modules, run the model batch by batch
under ``eval()`` and ``no_grad`` and yield each layer's flattened outputs
(:mod:`repsim.extract` stores or gathers them)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from repsim.devices import resolve_device
from repsim.names import INDEX, LABEL, STIMULUS

__all__ = ["as_stimuli", "batches", "layer_names", "parse_layers", "stream"]

_LAYER = re.compile(r"^(?P<module>[^\[\]:]+)(?:\[(?P<item>\d+)\])?(?::(?P<call>[1-9]\d*))?$")


@dataclasses.dataclass(frozen=True)
class _Layer:
    spec: str
    module: str
    item: int | None
    call: int | None


def layer_names(model: torch.nn.Module) -> list[str]:
    """Every name :func:`repsim.extract.extract` accepts for ``model`` (without index or call suffixes).

    For a TorchScript model these are the submodules its top-level forward calls.
    """
    if isinstance(model, torch.jit.ScriptModule):
        from repsim import _torchscript

        return _torchscript.callable_names(model)
    return [name for name, _ in model.named_modules() if name]


def parse_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[_Layer]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
    valid = layer_names(model)
    known = set(valid)
    if isinstance(model, torch.jit.ScriptModule):  # let _torchscript.tap explain what it can record
        known |= {name for name, _ in model.named_modules() if name}
    parsed, problems = [], []
    for spec in layers:
        m = _LAYER.match(spec) if isinstance(spec, str) else None
        if m is None:
            problems.append(f"{spec!r} is not 'module', 'module[i]' or 'module:call'")
            continue
        if m["module"] not in known:
            close = difflib.get_close_matches(m["module"], valid, n=4, cutoff=0.5)
            problems.append(
                f"unknown layer {m['module']!r}"
                + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            )
            continue
        item = None if m["item"] is None else int(m["item"])
        parsed.append(
            _Layer(spec, m["module"], item, None if m["call"] is None else int(m["call"]))
        )
    if problems:
        raise ValueError(
            "; ".join(problems)
            + ". repsim.extract.layer_names(model) lists the valid names"
            + (f" (first few: {', '.join(valid[:8])})" if valid else "")
        )
    duplicated = sorted({s.spec for s in parsed if [p.spec for p in parsed].count(s.spec) > 1})
    if duplicated:
        raise ValueError(f"layers named more than once: {', '.join(duplicated)}")
    return parsed


def _select(spec: _Layer, output: Any, batch: int) -> torch.Tensor:
    """The tensor of one recorded output, flattened to ``[batch, units]``."""
    if isinstance(output, torch.Tensor):
        if spec.item is not None:
            raise ValueError(
                f"layer {spec.spec!r}: {spec.module} returns a tensor, not a tuple; drop [{spec.item}]"
            )
        t = output
    elif isinstance(output, (tuple, list)):
        i = spec.item or 0
        if i >= len(output) or not isinstance(output[i], torch.Tensor):
            kinds = ", ".join(type(o).__name__ for o in output)
            raise ValueError(
                f"layer {spec.spec!r}: element {i} of {spec.module}'s output ({kinds}) is not a tensor; choose one with {spec.module}[k]"
            )
        t = output[i]
    else:
        raise ValueError(
            f"layer {spec.spec!r}: {spec.module} returns a {type(output).__name__}; repsim records tensors and tuples of tensors"
        )
    if t.ndim == 0 or t.shape[0] != batch:
        raise ValueError(
            f"layer {spec.spec!r}: output of shape {tuple(t.shape)} does not have the batch "
            f"({batch}) as its first dimension; record a module whose output is batch-first"
        )
    return t.detach().reshape(batch, -1)


class _Recorder:
    """Runs the model on a batch and returns ``[(key, [batch, units] tensor), ...]``."""

    def __init__(self, model: torch.nn.Module, layers: list[_Layer]) -> None:
        self.model, self.layers = model, layers
        self.modules = list(dict.fromkeys(spec.module for spec in layers))
        self.outputs: dict[str, list[Any]] = {}
        self.handles: list[Any] = []
        if isinstance(model, torch.jit.ScriptModule):
            from repsim import _torchscript

            self._tap, self._tap_keys = _torchscript.tap(model, self.modules)
        else:
            self._tap = None
            named = dict(model.named_modules())
            for name in self.modules:
                self.handles.append(named[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module, args, output):
            self.outputs[name].append(output)

        return record

    def __call__(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        self.outputs = {name: [] for name in self.modules}
        if self._tap is not None:
            for (name, _), value in zip(self._tap_keys, self._tap(x), strict=True):
                self.outputs[name].append(value)
        else:
            self.model(x)
        got = []
        for spec in self.layers:
            outs = self.outputs[spec.module]
            if spec.call is not None:
                if spec.call > len(outs):
                    raise ValueError(
                        f"layer {spec.spec!r}: {spec.module} was called {len(outs)} time(s) per forward, so it has no call {spec.call}"
                    )
                got.append((spec.spec, _select(spec, outs[spec.call - 1], len(x))))
            elif not outs:
                raise ValueError(
                    f"layer {spec.spec!r}: {spec.module} is not called by the model's forward"
                )
            elif len(outs) == 1:
                got.append((spec.spec, _select(spec, outs[0], len(x))))
            else:
                got += [
                    (f"{spec.spec}:{i}", _select(spec, o, len(x))) for i, o in enumerate(outs, 1)
                ]
        self.outputs = {}
        unique = dict(got)  # "shared" and "shared:2" both record shared's second call once
        return list(unique.items()) if len(unique) < len(got) else got

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _prepared(model: torch.nn.Module, device: torch.device) -> Iterator[torch.dtype]:
    """Eval mode on ``device`` inside; every module's mode and the device restored after."""
    modes = [(m, m.training) for m in model.modules()]
    tensors = list(model.parameters()) + list(model.buffers())
    devices = {t.device for t in tensors}
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    model.eval()
    moved = len(devices) == 1 and device not in devices
    if moved:
        model.to(device)
    try:
        yield floating[0] if floating else torch.get_default_dtype()
    finally:
        if moved:
            model.to(devices.pop())
        for m, mode in modes:
            m.training = mode


def as_stimuli(inputs: Any, labels: Any, indices: Any) -> tuple[Any, int, np.ndarray, np.ndarray]:
    """(sliceable inputs, n, labels, indices) from a tensor, array, DataArray or sequence."""
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover
        xr = None
    if xr is not None and isinstance(inputs, xr.DataArray):
        if STIMULUS in inputs.dims:
            inputs = inputs.transpose(STIMULUS, ...)
        if labels is None and LABEL in inputs.coords:
            labels = inputs.coords[LABEL].values
        if indices is None and INDEX in inputs.coords:
            indices = inputs.coords[INDEX].values
        inputs = inputs.data
    if not hasattr(inputs, "__len__") or not hasattr(inputs, "__getitem__"):
        raise TypeError(
            f"inputs must be a tensor, array, DataArray or sliceable sequence, got {type(inputs).__name__}"
        )
    n = len(inputs)
    if n == 0:
        raise ValueError("inputs hold no stimuli")
    labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    indices = (
        np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    )
    for name, values in (("labels", labels), ("indices", indices)):
        if values.shape != (n,):
            raise ValueError(
                f"{name} must have shape ({n},) to match the inputs, got {values.shape}"
            )
    return inputs, n, labels, indices


def batches(inputs: Any, n: int, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for start in range(0, n, batch_size):
        b = inputs[start : start + batch_size]
        yield start, b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))


def stream(
    model: torch.nn.Module,
    inputs: Any,
    n: int,
    layers: Sequence[str],
    batch_size: int,
    device: Any,
    progress: Any,
) -> Iterator[tuple[int, list[tuple[str, np.ndarray]]]]:
    """``(first row, [(key, float32 [batch, units]), ...])`` for each batch, in order."""
    specs = parse_layers(model, layers)
    dev = resolve_device(device)
    recorder = _Recorder(model, specs)
    keys = None
    try:
        with _prepared(model, dev) as dtype, torch.no_grad():
            for start, x in batches(inputs, n, batch_size):
                if x.is_floating_point() and dtype.is_floating_point:
                    x = x.to(dtype)
                got = recorder(x.to(dev, non_blocking=True))
                if keys is None:
                    keys = [k for k, _ in got]
                elif [k for k, _ in got] != keys:
                    raise ValueError(
                        f"the model recorded {[k for k, _ in got]} on stimuli {start}+ but {keys} before: a module's number of calls changed between batches"
                    )
                yield start, [(k, t.to("cpu", torch.float32).numpy()) for k, t in got]
                if progress is not None:
                    progress.update(len(x))
    finally:
        recorder.close()
