"""Record what each named layer of a network computes, in memory or streamed to zarr.

Layers are named by their dotted ``named_modules()`` path (``block3``,
``features.4.conv1``) and captured with forward hooks, batch by batch, under ``eval()``
and ``no_grad``; the model's modes and device are restored afterwards. A layer name may
carry an output index and a call number::

    block3          the module's output (a tuple output: its first tensor)
    lstm[1]         element 1 of a tuple output
    shared:2        only the second call of a module called several times per forward

A module called several times per forward without a call number records every call, as
``shared:1``, ``shared:2``, ... Outputs of any shape are flattened per stimulus in their
logical (C, H, W) order.

Command line::

    python -m repsim.extract ckpt/                     # every run under ckpt/
    python -m repsim.extract weights.safetensors --model pkg.mod:build --layers fc1,fc2
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import hashlib
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from repsim import checkpoints, cli, datasets, weights
from repsim.devices import resolve_device
from repsim.names import INDEX, LABEL, STIMULUS, UNIT
from repsim.runs import NothingAnalysed, Run
from repsim.store import RunWriter, check_run_name, read_run_attrs

__all__ = ["ExtractResult", "extract", "extract_runs", "extract_to_zarr", "layer_names", "main"]

_LAYER = re.compile(r"^(?P<module>[^\[\]:]+)(?:\[(?P<item>\d+)\])?(?::(?P<call>[1-9]\d*))?$")
#: Provenance entries that decide whether a stored run is up to date.
_IDENTITY = ("weights_sha256", "stimuli_sha256", "layers_requested", "store_format")


@dataclasses.dataclass(frozen=True)
class _Layer:
    spec: str
    module: str
    item: int | None
    call: int | None


def layer_names(model: torch.nn.Module) -> list[str]:
    """Every name :func:`extract` accepts for ``model`` (without index or call suffixes).

    For a TorchScript model these are the submodules its top-level forward calls.
    """
    if isinstance(model, torch.jit.ScriptModule):
        from repsim import _torchscript

        return _torchscript.callable_names(model)
    return [name for name, _ in model.named_modules() if name]


def _parse_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[_Layer]:
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


def _as_stimuli(inputs: Any, labels: Any, indices: Any) -> tuple[Any, int, np.ndarray, np.ndarray]:
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


def _batches(inputs: Any, n: int, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for start in range(0, n, batch_size):
        b = inputs[start : start + batch_size]
        yield start, b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))


def _stream(
    model: torch.nn.Module,
    inputs: Any,
    n: int,
    layers: Sequence[str],
    batch_size: int,
    device: Any,
    progress: Any,
) -> Iterator[tuple[int, list[tuple[str, np.ndarray]]]]:
    """``(first row, [(key, float32 [batch, units]), ...])`` for each batch, in order."""
    specs = _parse_layers(model, layers)
    dev = resolve_device(device)
    recorder = _Recorder(model, specs)
    keys = None
    try:
        with _prepared(model, dev) as dtype, torch.no_grad():
            for start, x in _batches(inputs, n, batch_size):
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


def extract(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[str],
    *,
    labels: Any = None,
    indices: Any = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
):
    """Activations of the named layers for every stimulus, in memory.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` (or TorchScript module); its modes and device are restored.
    inputs
        ``[n, ...]`` stimuli: a tensor, numpy array, DataArray (with a ``stimulus`` dim and
        ``label``/``index`` coordinates, used when ``labels``/``indices`` are not given),
        or anything sliceable along its first axis.
    layers
        Module names (``layer_names(model)``), optionally ``name[i]`` or ``name:call``.
    labels, indices
        int ``[n]``: class of each stimulus (default -1, unknown) and its position in the
        source dataset (default ``0..n-1``).

    Returns
    -------
    xarray.DataTree
        One child per recorded layer, in order, each holding ``activations`` float32
        ``(stimulus, unit)`` with coordinates ``label`` and ``index``; ``attrs["layers"]``
        lists the children in order.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> tree = extract(net, torch.randn(5, 4), ["0", "1"], device="cpu")
    >>> tree["1"]["activations"].sizes
    Frozen({'stimulus': 5, 'unit': 3})
    """
    import xarray as xr

    inputs, n, labels, indices = _as_stimuli(inputs, labels, indices)
    parts: dict[str, list[np.ndarray]] = {}
    for _, got in _stream(model, inputs, n, layers, batch_size, device, None):
        for key, block in got:
            parts.setdefault(key, []).append(block)
    coords = {LABEL: (STIMULUS, labels), INDEX: (STIMULUS, indices)}
    nodes = {
        key: xr.Dataset(
            {"activations": ((STIMULUS, UNIT), np.concatenate(blocks))},
            coords=coords,
            attrs={"layer": key},
        )
        for key, blocks in parts.items()
    }
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs={"layers": list(nodes)}), **nodes})


def _stimuli_sha256(
    inputs: Any, n: int, labels: np.ndarray, indices: np.ndarray, batch_size: int
) -> str:
    h = hashlib.sha256()
    for _, x in _batches(inputs, n, max(batch_size, 4096)):
        x = x.detach().to("cpu").contiguous()
        h.update(f"{x.dtype}|{tuple(x.shape[1:])}|".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(labels.tobytes())
    h.update(indices.tobytes())
    return h.hexdigest()


class ExtractResult(NamedTuple):
    """What :func:`extract_to_zarr` did: the stored run, opened lazily, and whether it was reused."""

    tree: Any
    skipped: bool


def extract_to_zarr(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[str],
    store: str | os.PathLike,
    *,
    run: str = "model",
    labels: Any = None,
    indices: Any = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    provenance: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: bool = False,
    weights_sha256: str | None = None,
) -> ExtractResult:
    """Stream the activations of ``layers`` into run ``run`` of a zarr store.

    Memory holds one batch and one chunk per layer, whatever the number of stimuli. The
    run is written beside the store and renamed into it when complete, replacing any
    previous version of the run; an interrupted extraction leaves the store as it was.
    If the store already holds the run computed from the same weights (content hash),
    stimuli (content hash) and layers, nothing is computed unless ``force``.

    Parameters
    ----------
    store
        Path of the ``.zarr`` store; other runs in it are left alone.
    run
        The run's name in the store (``"bp"``, ``"bp/seed-1"``): relative, with no empty,
        ``.``, ``..`` or hidden parts (ValueError otherwise).
    provenance
        Extra JSON-serialisable attributes for the run (checkpoint path, dataset, the
        stimulus selection); weights and stimuli hashes, layers and versions are added.
    progress
        Show a progress bar (tqdm) over stimuli.
    weights_sha256
        The weights' content hash when the caller has it
        (:attr:`repsim.checkpoints.CheckpointInfo.weights_sha256`); computed otherwise.

    Other parameters are as for :func:`extract`.

    Returns
    -------
    ExtractResult
        ``(tree, skipped)``: the run's node of the store (lazy :class:`xarray.DataTree`)
        and whether an up-to-date copy was reused.
    """
    from repsim.store import STORE_FORMAT, open_activations, verify_run

    store = Path(store)
    check_run_name(run)  # "../x", "/x", ".x" would write outside the store or hide in it
    inputs, n, labels, indices = _as_stimuli(inputs, labels, indices)
    _parse_layers(model, layers)  # fail before hashing anything
    attrs = {
        **dict(provenance or {}),
        "layers_requested": list(layers),
        "n_stimuli": n,
        "weights_sha256": weights_sha256 or weights.weights_sha256(model),
        "stimuli_sha256": _stimuli_sha256(inputs, n, labels, indices, batch_size),
        "store_format": STORE_FORMAT,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    old = read_run_attrs(store, run)
    if not force and old is not None and all(old.get(k) == attrs[k] for k in _IDENTITY):
        verify_run(store, run)  # up to date only if every chunk is there and intact
        return ExtractResult(open_activations(store, verify=False)[run], True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=run, unit="stim", leave=False, dynamic_ncols=True)
    try:
        with RunWriter(store, run, labels, indices, attrs) as writer, ThreadPoolExecutor(1) as pool:
            # compression and disk writes of one batch overlap the forward of the next
            pending: deque[Future] = deque()
            for start, got in _stream(model, inputs, n, layers, batch_size, device, bar):
                if start == 0:
                    for key, block in got:
                        writer.add_layer(key, block.shape[1])
                pending.append(pool.submit(_write_all, writer, start, got))
                while len(pending) > 2:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
            try:
                writer.commit()
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # another process committed this run between our two renames: keep its
                # copy when it is the same computation, intact; ours is discarded
                writer.abort()
                theirs = read_run_attrs(store, run) or {}
                if not all(theirs.get(k) == attrs[k] for k in _IDENTITY):
                    raise ValueError(
                        f"another process wrote run {run!r} of {store} at the same time, from "
                        "other weights, stimuli or layers; run the command again when it is done"
                    ) from err
                verify_run(store, run)
                return ExtractResult(open_activations(store, verify=False)[run], True)
    finally:
        if bar is not None:
            bar.close()
    return ExtractResult(open_activations(store, verify=False)[run], False)


def _write_all(writer: RunWriter, start: int, got: list[tuple[str, np.ndarray]]) -> None:
    for key, block in got:
        writer.write(key, start, block)


def _versions() -> dict[str, str]:
    import xarray
    import zarr

    return {**checkpoints.versions(), "xarray": xarray.__version__, "zarr": zarr.__version__}


# ------------------------------------------------------------------- runs


def extract_runs(
    runs: Sequence[Run],
    *,
    stimuli: str | None = None,
    store: str | os.PathLike | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    force: bool = False,
    progress: bool = False,
    finite: bool = True,
    selected: dict[str, datasets.Stimuli] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Activations of every run's layers, in memory or stored (and reused) in a zarr store.

    Parameters
    ----------
    runs
        :class:`repsim.runs.Run` objects (:func:`repsim.runs.discover`, :func:`repsim.runs.from_model`):
        their weights are not read or hashed again.
    stimuli
        ``<dataset>:<split>:<n|all>``, where ``{dataset}`` stands for each run's own
        dataset; default the paper's 400 test points of the run's dataset
        (:meth:`repsim.runs.Run.stimuli`).
    store
        A ``.zarr`` store to write each run into (:func:`extract_to_zarr`: a run already
        there from the same weights, stimuli and layers is reused unless ``force``); None
        keeps everything in memory.
    finite
        Refuse a run with NaN or inf activations (it is stored all the same).
    selected
        Stimulus selection → :class:`repsim.datasets.Stimuli`, filled with what is loaded
        (and reused from it), so that a caller who needs the inputs too loads them once.
    on_error
        ``on_error(run, err)`` is called for a run that fails, which is then left out;
        without it, the first error is raised. When every run fails,
        :class:`repsim.runs.NothingAnalysed` is raised.
    log
        Called with one line per run (what was extracted, how fast), e.g. ``print``.

    Other parameters are as for :func:`extract`.

    Returns
    -------
    xarray.DataTree
        ``tree[run][layer]["activations"]`` ``(stimulus, unit)`` for each run that
        succeeded, in order, as :func:`repsim.store.open_activations` returns it; run nodes
        carry ``run``, ``layers`` and provenance attributes.
    """
    import xarray as xr

    from repsim.store import open_activations

    selected = {} if selected is None else selected
    nodes, done, failed = {}, [], 0
    for run in runs:
        try:
            spec = run.stimuli(stimuli)
            if spec not in selected:
                selected[spec] = datasets.select(spec)
            inputs, labels, indices = selected[spec]
            name, split, _ = datasets.parse_stimuli(spec)
            provenance = {
                "checkpoint": str(run.info.path),
                "factory": run.info.factory,
                "stimuli": spec,
                "dataset": name,
                "split": split,
            }
            t0 = time.perf_counter()
            if store is None:
                tree = extract(
                    run.model,
                    inputs,
                    list(run.layers),
                    labels=labels,
                    indices=indices,
                    batch_size=batch_size,
                    device=device,
                )
                tree.attrs.update(provenance, run=run.name, nonfinite_layers=_nonfinite(tree))
                skipped = False
            else:
                tree, skipped = extract_to_zarr(
                    run.model,
                    inputs,
                    list(run.layers),
                    store,
                    run=run.name,
                    labels=labels,
                    indices=indices,
                    batch_size=batch_size,
                    device=device,
                    force=force,
                    progress=progress,
                    provenance=provenance,
                    weights_sha256=run.info.weights_sha256,
                )
            seconds = time.perf_counter() - t0
            if log is not None:
                what = "up to date" if skipped else f"{len(indices) / seconds:,.0f} stimuli/s"
                where = "memory" if store is None else Path(store) / run.name
                log(
                    f"{run.name}: {len(tree.children)} layers × {len(indices)} stimuli → {where} ({what}, {seconds:.1f} s)"
                )
            bad = tree.attrs.get("nonfinite_layers") or []
            if finite and bad:
                raise ValueError(
                    f"run {run.name!r}: activations of layer(s) {', '.join(bad)} are NaN or inf, so it "
                    "cannot be analysed (are its weights finite? python -m repsim.norms checks them)"
                )
            if bad:
                print(
                    f"note: {run.name}: layer(s) {', '.join(bad)} hold NaN or inf activations",
                    file=sys.stderr,
                )
        except Exception as err:
            if on_error is None:
                raise
            on_error(run.name, err)
            failed += 1
            continue
        done.append(run.name)
        nodes[run.name] = tree
    if runs and not done:
        raise NothingAnalysed(f"no run could be analysed ({failed} failed)")
    if store is not None:
        return open_activations(store, runs=done, verify=False)
    tree = xr.DataTree.from_dict({f"/{name}": node for name, node in nodes.items()})
    tree.attrs["runs"] = done
    return tree


def _nonfinite(tree: Any) -> list[str]:
    return [
        key
        for key, node in tree.children.items()
        if not np.isfinite(node["activations"].values).all()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.extract``: see the module docstring."""
    return cli.main(_COMMAND, argv, store="activations.zarr")


def _extract(runs: list[Run], context: cli.Context) -> None:
    args = context.args
    extract_runs(
        runs,
        stimuli=args.stimuli,
        store=context.store,
        device=args.device,
        finite=False,
        **context.extraction(),
    )


_COMMAND = cli.Command(
    "extract", "Record layer activations of checkpoints into activations.zarr.", _extract
)


if __name__ == "__main__":
    sys.exit(main())
