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

import errno
import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from repsim import _record, checkpoints, cli, datasets, weights
from repsim._record import layer_names
from repsim.names import INDEX, LABEL, STIMULUS, UNIT
from repsim.runs import NothingAnalysed, Run, attempt
from repsim.store import RunWriter, check_run_name, read_run_attrs

__all__ = ["ExtractResult", "extract", "extract_runs", "extract_to_zarr", "layer_names", "main"]

#: Provenance entries that decide whether a stored run is up to date.
_IDENTITY = ("weights_sha256", "stimuli_sha256", "layers_requested", "store_format")


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

    inputs, n, labels, indices = _record.as_stimuli(inputs, labels, indices)
    parts: dict[str, list[np.ndarray]] = {}
    for _, got in _record.stream(model, inputs, n, layers, batch_size, device, None):
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
    for _, x in _record.batches(inputs, n, max(batch_size, 4096)):
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
    inputs, n, labels, indices = _record.as_stimuli(inputs, labels, indices)
    _record.parse_layers(model, layers)  # fail before hashing anything
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
            for start, got in _record.stream(model, inputs, n, layers, batch_size, device, bar):
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
    options = {"batch_size": batch_size, "device": device, "force": force, "progress": progress}
    done = attempt(
        runs,
        lambda run: _extract_run(run, stimuli, store, selected, finite, log, **options),
        on_error,
    )
    names = [run.name for run, _ in done]
    if runs and not done:
        raise NothingAnalysed(f"no run could be analysed ({len(runs)} failed)")
    if store is not None:
        return open_activations(store, runs=names, verify=False)
    tree = xr.DataTree.from_dict({f"/{run.name}": node for run, node in done})
    tree.attrs["runs"] = names
    return tree


def _extract_run(
    run: Run,
    stimuli: str | None,
    store: str | os.PathLike | None,
    selected: dict[str, datasets.Stimuli],
    finite: bool,
    log: Callable[[str], None] | None,
    *,
    force: bool,
    progress: bool,
    **options: Any,
) -> Any:
    """One run's activations tree, as :func:`extract_runs` describes."""
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
    options.update(labels=labels, indices=indices)
    t0 = time.perf_counter()
    if store is None:
        tree = extract(run.model, inputs, list(run.layers), **options)
        tree.attrs.update(provenance, run=run.name, nonfinite_layers=_nonfinite(tree))
        skipped = False
    else:
        tree, skipped = extract_to_zarr(
            run.model,
            inputs,
            list(run.layers),
            store,
            run=run.name,
            force=force,
            progress=progress,
            provenance=provenance,
            weights_sha256=run.info.weights_sha256,
            **options,
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
