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

import argparse
import contextlib
import dataclasses
import difflib
import errno
import hashlib
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from repsim import checkpoints, datasets
from repsim.devices import resolve_device
from repsim.store import STIMULUS, UNIT, RunWriter, check_run_name, read_run_attrs

__all__ = ["ExtractResult", "extract", "extract_to_zarr", "layer_names", "main"]

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
        if labels is None and "label" in inputs.coords:
            labels = inputs.coords["label"].values
        if indices is None and "index" in inputs.coords:
            indices = inputs.coords["index"].values
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
    coords = {"label": (STIMULUS, labels), "index": (STIMULUS, indices)}
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
        "weights_sha256": checkpoints.weights_sha256(model),
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


# ------------------------------------------------------------------- command line


class _Take:
    """Rows ``indices`` of ``data``, gathered one slice at a time (no copy of the whole set)."""

    def __init__(self, data: torch.Tensor, indices: np.ndarray) -> None:
        self.data, self.indices = data, torch.from_numpy(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, s: slice) -> torch.Tensor:
        return self.data[self.indices[s]]


def _stimuli(spec: str) -> tuple[_Take, np.ndarray, np.ndarray, dict[str, Any]]:
    name, split, n = datasets.parse_stimuli(spec)
    X, y = datasets.load(name, split)
    idx = np.arange(len(y)) if n is None else datasets.balanced_indices(y.numpy(), n)
    return _Take(X, idx), y.numpy()[idx], idx, {"stimuli": spec, "dataset": name, "split": split}


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that say which networks, layers and stimuli (shared by every command)."""
    p.add_argument(
        "path",
        type=Path,
        help="a directory of checkpoints (searched recursively), one checkpoint, or a weights file",
    )
    p.add_argument(
        "--layers", help="comma-separated module names (default: the checkpoint's layers)"
    )
    p.add_argument(
        "--stimuli",
        help="<dataset>:<split>:<n|all> (default: the paper's 400 test points of the run's dataset, <dataset>:test:400)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--model", help="package.module:callable that builds the network (external weights)"
    )
    p.add_argument(
        "--model-kwargs", type=json.loads, help="JSON object of keyword arguments for --model"
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="let checkpoint.json name any callable as its model factory, not only a model class (runs its code)",
    )
    p.add_argument(
        "--max-model-gb",
        type=float,
        help="refuse models whose parameters and buffers exceed this size (default: 4)",
    )
    p.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="load weights even if some keys are missing or unexpected",
    )
    p.add_argument("--force", action="store_true", help="recompute runs that are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the traceback of each error")


def output_dir(path: Path) -> Path:
    """Where a command writes by default: the directory given, or the weights file's."""
    return path.parent if path.is_file() else path


def _max_bytes(gb: float | None) -> int | None:
    if gb is None:
        return None
    if not gb > 0:
        raise ValueError(f"--max-model-gb must be a positive number, got {gb}")
    return int(gb * 2**30)


def iter_runs(
    args: argparse.Namespace, failures: Any = None
) -> Iterator[tuple[str, torch.nn.Module, checkpoints.CheckpointInfo]]:
    """``(run, model, info)`` for every network named by the shared arguments.

    With ``failures`` (a :class:`repsim._cli.Failures`), a run that cannot be loaded is
    recorded there and skipped; without, its error is raised.
    """
    path = args.path.expanduser()
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    if path.is_file():
        targets = [(path.stem, path)]
    else:
        targets = checkpoints.discover(path)
        if not targets:
            raise FileNotFoundError(
                f"no checkpoint (a directory with {checkpoints.META}) under {path}"
            )
    for run, target in targets:
        try:
            model, info = checkpoints.load(
                target,
                model=args.model,
                model_kwargs=args.model_kwargs,
                layers=layers,
                trust=args.trust,
                strict=args.strict,
                max_model_bytes=_max_bytes(getattr(args, "max_model_gb", None)),
            )
        except Exception as err:
            if failures is None:
                raise
            failures.add(run, err)
            continue
        yield run, model, info


def _refuse_nonfinite(run: str, tree: Any) -> None:
    bad = tree.attrs.get("nonfinite_layers") or []
    if bad:
        raise ValueError(
            f"run {run!r}: activations of layer(s) {', '.join(bad)} are NaN or inf, so it "
            "cannot be analysed (are its weights finite? python -m repsim.norms checks them)"
        )


def extract_runs(
    args: argparse.Namespace,
    store: Path,
    *,
    stimuli: str | None = None,
    failures: Any = None,
    finite: bool = True,
) -> list[tuple[str, checkpoints.CheckpointInfo]]:
    """Extract (or reuse) every run named by ``args`` into ``store``; print one line per run.

    ``stimuli`` (a ``<dataset>:<split>:<n|all>`` spec, where ``{dataset}`` stands for the
    run's own dataset) overrides ``--stimuli``; by default each run gets the paper's 400
    test points of its own dataset. ``finite`` refuses a run with NaN or inf activations
    (it is stored all the same). With ``failures`` (a :class:`repsim._cli.Failures`), a run
    that fails is recorded there and left out of the list returned; without, the first
    error is raised.
    """
    done = []
    for run, model, info in iter_runs(args, failures):
        try:
            spec = (stimuli or args.stimuli or "{dataset}:test:400").format(
                dataset=info.dataset or "mnist-5k"
            )
            inputs, labels, indices, selection = _stimuli(spec)
            t0 = time.perf_counter()
            result = extract_to_zarr(
                model, inputs, list(info.layers), store, run=run, labels=labels, indices=indices,
                batch_size=args.batch_size, device=args.device, force=args.force, progress=not args.quiet,
                provenance={"checkpoint": str(info.path), "factory": info.factory, **selection},
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            what = "up to date" if result.skipped else f"{len(indices) / seconds:,.0f} stimuli/s"
            print(
                f"{run}: {len(result.tree.children)} layers × {len(indices)} stimuli → {store / run} ({what}, {seconds:.1f} s)"
            )
            if finite:
                _refuse_nonfinite(run, result.tree)
            elif result.tree.attrs.get("nonfinite_layers"):
                bad = ", ".join(result.tree.attrs["nonfinite_layers"])
                print(f"note: {run}: layer(s) {bad} hold NaN or inf activations", file=sys.stderr)
        except Exception as err:
            if failures is None:
                raise
            failures.add(run, err)
            continue
        done.append((run, info))
    if not done and failures is not None and failures.items:
        from repsim import _cli

        raise _cli.NothingAnalysed(f"no run could be analysed ({len(failures.items)} failed)")
    return done


def sg_marks(infos: Sequence[tuple[str, checkpoints.CheckpointInfo]]) -> dict[str, list[str]]:
    """Run → the layers after which a synthetic gradient sits (from ``checkpoint.json``)."""
    marks = {}
    for run, info in infos:
        positions = (info.method or {}).get("sg_layers") or []
        marks[run] = [info.layers[k - 1] for k in positions if 0 < k <= len(info.layers)]
    return marks


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m repsim.extract``: see the module docstring."""
    from repsim import _cli

    p = argparse.ArgumentParser(
        prog="python -m repsim.extract",
        description="Record layer activations of checkpoints into activations.zarr.",
    )
    add_source_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        help="the zarr store (a path ending in .zarr), or a directory to write activations.zarr "
        "into (default: the directory given, or the weights file's)",
    )
    args = p.parse_args(argv)
    failures = _cli.Failures(p.prog, argv, args.debug)
    try:
        if args.out is not None and args.out.suffix == ".zarr":
            _cli.out_dir(args)  # refuses a file
            store = args.out.expanduser()
        else:
            store = _cli.out_dir(args) / "activations.zarr"
        extract_runs(args, store, failures=failures, finite=False)
    except _cli.ERRORS as err:
        return failures.fail(err)
    return failures.end()


if __name__ == "__main__":
    sys.exit(main())
