"""Zarr stores of activations and results (DESIGN.md, Contracts 2 and 3): all repsim I/O.

An activations store holds one group per run (nested where the run's name has slashes,
``bp/seed-1``) and, in it, one group per layer::

    activations.zarr/
      <run>/                  attrs: run, layers (ordered), provenance
        <layer>/              attrs: layer
          activations         float32 (stimulus, unit), chunked by stimulus
          label, index        int64 (stimulus): class label, position in the dataset

Opened with :func:`open_activations` it is an :class:`xarray.DataTree` backed by dask, so
nothing is read until it is used. A run is written beside the store and renamed into it
when complete (:class:`RunWriter`): a store never holds a half-written run.

Stores are verified, not trusted. Each run (and each result of a results store) records in
its group's attributes a ``manifest``: every file its writer wrote, with its size and
SHA-256. Opening a run or a result checks it against the files (hashing them once per
process; later opens only compare ``stat``), and a missing, truncated or altered chunk is a
:class:`DamagedStoreError` that names it, never zeros or NaN read as data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repsim import _atomic, _manifest
from repsim._manifest import DamagedStoreError
from repsim.names import EPOCH, INDEX, LABEL, LAYER, RUN, STIMULUS, UNIT

__all__ = [
    "STIMULUS",
    "UNIT",
    "DamagedStoreError",
    "RunWriter",
    "check_run_name",
    "iter_layers",
    "open_activations",
    "open_results",
    "read_histories",
    "read_run_attrs",
    "read_sg_quality",
    "verify_run",
    "write_result",
]

#: Bump when the layout changes so that stores written before are recomputed, not misread.
STORE_FORMAT = 2  # 2: runs carry a manifest of their files, and which layers are non-finite
_CHUNK_BYTES = 4 << 20  # target size of one chunk: big enough to stream, small enough to buffer


def _check_node_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith("__") or name in (LABEL, INDEX, ".", ".."):
        raise ValueError(
            f"{what} {name!r} cannot name a zarr group (empty, contains '/', starts with '__', "
            "or is 'label', 'index', '.' or '..')"
        )


def check_run_name(run: str) -> str:
    """``run`` if it can name a run inside a store: slash-separated, relative, no hidden parts.

    Raises ValueError for a name that would reach outside the store or hide in it
    (``../victim``, ``/abs``, ``a//b``, ``.git``).
    """
    if not isinstance(run, str) or not run:
        raise ValueError(f"run name must be a non-empty string, got {run!r}")
    if run.startswith("/") or "\\" in run or (len(run) > 1 and run[1] == ":"):
        raise ValueError(
            f"run name {run!r} is an absolute path; name runs like 'bp' or 'bp/seed-1'"
        )
    for part in run.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(
                f"run name {run!r} has an empty, '.' or '..' part; name runs like 'bp' or "
                "'bp/seed-1' (relative, inside the store)"
            )
        if part.startswith("."):
            raise ValueError(
                f"run name {run!r} has a hidden part {part!r} (starting with '.'), which is "
                "kept for temporaries"
            )
        _check_node_name(part, "run name part")
    return run


def verify_run(store: str | os.PathLike, run: str) -> None:
    """Check that a run of an activations store holds every file its writer wrote, intact.

    Raises
    ------
    DamagedStoreError
        Naming the run, layer, array and chunk that is missing or altered.
    """
    _manifest.verify(Path(store) / run, f"activations store {store}, run {run!r}", "run")


def _clean_stale(store: Path) -> None:
    """Remove temporaries left by writers that died (see :mod:`repsim._atomic`)."""
    _atomic.clean_stale(store.parent, store.name)


def _ensure_groups(store: Path, run: str) -> None:
    """The store's root group and the groups above ``run`` (``bp`` for ``bp/seed-1``)."""
    parts = run.split("/")
    for i in range(len(parts)):
        _ensure_group(store / "/".join(parts[:i]) if i else store)


def _ensure_group(path: Path) -> None:
    """An empty zarr group at ``path`` unless one is there, its ``zarr.json`` written to a
    temporary name and renamed: writers on several Dask workers create the same groups at
    once, and none may read another's half-written metadata."""
    meta = path / "zarr.json"
    if meta.is_file():
        return
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".zarr.json.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.write_text(json.dumps({"attributes": {}, "zarr_format": 3, "node_type": "group"}))
    os.replace(tmp, meta)


def read_run_attrs(store: str | os.PathLike, run: str) -> dict[str, Any] | None:
    """The attributes (provenance) of one run in a store, or None when it has none."""
    meta = Path(store) / check_run_name(run) / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None


class RunWriter:
    """Stream one run's activations into a store; it appears there only on :meth:`commit`.

    Layers are added as their widths become known; rows arrive in order and are buffered
    to whole chunks, so memory is one chunk per layer however many stimuli there are.

    Parameters
    ----------
    store
        Path of the ``.zarr`` store (created if missing).
    run
        The run's name, e.g. ``"bp"`` or ``"bp/seed-1"``.
    labels, indices
        int64 ``[n]``: each stimulus's class and position in its dataset.
    attrs
        JSON-serialisable provenance stored on the run's group.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        run: str,
        labels: np.ndarray,
        indices: np.ndarray,
        attrs: Mapping[str, Any],
    ) -> None:
        import zarr

        check_run_name(run)
        self.store, self.run = Path(store), run
        self.n = len(labels)
        self.store.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(self.store)
        self.tmp = _atomic.make_temp(self.store.parent, self.store.name)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._indices = np.asarray(indices, dtype=np.int64)
        self._group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self._group.attrs.update({**attrs, "run": run, "store_format": STORE_FORMAT})
        self._arrays: dict[str, Any] = {}
        self._buffers: dict[str, tuple[np.ndarray, int]] = {}  # layer -> (buffer, first row)
        self.layers: list[str] = []
        self.nonfinite: set[str] = set()  # layers where some activation is NaN or inf

    def add_layer(self, layer: str, units: int) -> None:
        """Create the ``(stimulus, unit)`` array of a layer of ``units`` units."""
        from zarr.codecs import ZstdCodec

        _check_node_name(layer, "layer name")
        g = self._group.create_group(layer, attributes={"layer": layer})
        rows = int(min(self.n, max(1, _CHUNK_BYTES // (4 * max(units, 1)))))
        self._arrays[layer] = g.create_array(
            "activations",
            shape=(self.n, units),
            chunks=(rows, units),
            dtype="float32",
            dimension_names=(STIMULUS, UNIT),
            attributes={"coordinates": "label index"},
            compressors=ZstdCodec(level=1),  # ReLU layers halve; level 3 costs 1.7× the time
            fill_value=np.nan,  # a chunk that goes missing cannot pass for activations
            config={"write_empty_chunks": True},  # skip comparing each chunk to the fill value
        )
        for name, values in ((LABEL, self._labels), (INDEX, self._indices)):
            a = g.create_array(name, shape=(self.n,), dtype="int64", dimension_names=(STIMULUS,))
            a[:] = values
        self._buffers[layer] = (np.empty((rows, units), np.float32), 0)
        self.layers.append(layer)

    def write(self, layer: str, start: int, block: np.ndarray) -> None:
        """Rows ``start : start + len(block)`` of a layer; rows must arrive in order."""
        buf, first = self._buffers[layer]
        if layer not in self.nonfinite and not np.isfinite(block).all():
            self.nonfinite.add(layer)
        rows = len(buf)
        pos = 0
        while pos < len(block):
            offset = start + pos - first
            take = min(rows - offset, len(block) - pos)
            buf[offset : offset + take] = block[pos : pos + take]
            pos += take
            if offset + take == rows or first + offset + take == self.n:
                self._arrays[layer][first : first + offset + take] = buf[: offset + take]
                first += offset + take
                self._buffers[layer] = (buf, first)

    def commit(self) -> Path:
        """Check every row was written, then move the run into the store atomically."""
        unfinished = [layer for layer, (_, first) in self._buffers.items() if first != self.n]
        if unfinished:
            raise RuntimeError(f"internal: rows missing in {unfinished} of run {self.run!r}")
        self._group.attrs.update(
            {
                "layers": list(self.layers),
                "nonfinite_layers": [x for x in self.layers if x in self.nonfinite],
            }
        )
        _manifest.write_manifest(self.tmp)
        _ensure_groups(self.store, self.run)
        dest = self.store / self.run
        _atomic.swap(self.tmp, dest, self.tmp, self.store.name)
        return dest

    def abort(self) -> None:
        """Remove what was written; the store is as before."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _run_names(tree) -> list[str]:
    return sorted(
        node.attrs["run"] for node in tree.subtree if "run" in node.attrs and "layers" in node.attrs
    )


def iter_layers(tree):
    """``(run, layer, activations)`` for every layer of every run, in the runs' layer order.

    ``tree`` is an activations store (:func:`open_activations`) or the tree of one run
    (:func:`repsim.extract.extract`, whose run is named ``""``).
    """
    roots = sorted(
        (node.attrs["run"], node)
        for node in tree.subtree
        if "run" in node.attrs and "layers" in node.attrs
    ) or [("", tree)]
    for run, node in roots:
        for layer in node.attrs.get("layers", list(node.children)):
            yield run, layer, node[layer]["activations"]


def open_activations(
    path: str | os.PathLike, *, runs: Sequence[str] | None = None, verify: bool = True
):
    """Open an activations store lazily as an :class:`xarray.DataTree`.

    ``runs`` keeps only the named runs (an error names any the store lacks). Each run kept
    is first checked against its manifest (:func:`verify_run`) unless ``verify=False``.

    Returns
    -------
    xarray.DataTree
        ``tree[run][layer]["activations"]`` is a dask-backed DataArray with dims
        ``(stimulus, unit)`` and coordinates ``label`` and ``index`` on ``stimulus``; the
        run node's attrs hold its provenance and the ordered ``layers``; the root's attrs
        list the ``runs``.

    Examples
    --------
    >>> tree = open_activations("ckpt/activations.zarr")  # doctest: +SKIP
    >>> tree["bp"]["block3"]["activations"].sizes  # doctest: +SKIP
    Frozen({'stimulus': 400, 'unit': 128})
    """
    import xarray as xr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a zarr store; write one with python -m repsim.extract <checkpoints>"
        )
    tree = xr.open_datatree(path, engine="zarr", chunks={}, consolidated=False, zarr_format=3)
    found = _run_names(tree)
    if runs is not None:
        missing = [r for r in runs if r not in found]
        if missing:
            raise ValueError(
                f"{path} holds no run {', '.join(map(repr, missing))}; it holds {', '.join(found) or 'none'}"
            )
        if list(runs) != found:
            tree = xr.DataTree.from_dict({f"/{r}": tree[r] for r in runs})
        found = list(runs)
    for run in found:
        if verify:
            verify_run(path, run)
        tree[run].attrs.pop(_manifest.MANIFEST, None)
    tree.attrs["runs"] = found
    return tree


# ------------------------------------------------------------------- results


def write_result(
    path: str | os.PathLike, result, *, provenance: Mapping[str, Any] | None = None
) -> Path:
    """Add one analysis's result to a results store, replacing only that result.

    Each variable lives in its own group (``results.zarr/rdm``, ``.../diag_l2``), written
    beside the store and renamed into place, so adding one analysis never rewrites or loses
    another's, and a reader never sees half a result.

    Parameters
    ----------
    result
        A named DataArray (``rdm``, ``diag_l2``, ``probe_accuracy``, ...).
    provenance
        JSON-serialisable attributes stored with the variable (what it was computed from).
    """
    import zarr

    if not getattr(result, "name", None):
        raise ValueError("write_result needs a named DataArray (e.g. result.rename('rdm'))")
    name = str(result.name)
    _check_node_name(name, "result name")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    zarr.open_group(str(path), mode="a", zarr_format=3)
    tmp = _atomic.make_temp(path.parent, path.name)
    try:
        da = result.copy()
        da.attrs = {**da.attrs, **dict(provenance or {})}
        ds = da.to_dataset()
        for c in ds.coords:  # variable-length strings have a zarr 3 spec; fixed-width do not
            if ds[c].dtype.kind == "U":
                ds = ds.assign_coords({c: ds[c].astype(object)})
        ds.to_zarr(tmp / name, mode="w", zarr_format=3, consolidated=False)
        _manifest.write_manifest(tmp / name)
        _atomic.swap(tmp / name, path / name, tmp, path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path / name


def open_results(path: str | os.PathLike, *, verify: bool = True):
    """Open a results store as one lazy :class:`xarray.Dataset`.

    Each result is first checked against the manifest its writer recorded, unless
    ``verify=False``: a missing or altered chunk is a :class:`DamagedStoreError` naming it.

    Returns
    -------
    xarray.Dataset
        Whichever of ``rdm(run, layer, stimulus, stimulus_)``, ``diag_l2(run, layer)``,
        ``probe_accuracy(run, layer, split)``, ``probe_mse(run, layer, split)``,
        ``weight_norm(run, layer)`` have been computed, each with its provenance in its
        attrs. Runs or layers that one analysis covers and another does not are NaN there.

    Examples
    --------
    >>> results = open_results("ckpt/results.zarr")  # doctest: +SKIP
    >>> results.diag_l2.sel(run="bp")  # doctest: +SKIP
    """
    import xarray as xr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a results store; compute one with python -m repsim.report <checkpoints>"
        )
    groups = [group for group in sorted(path.iterdir()) if (group / "zarr.json").is_file()]
    if verify:
        for group in groups:
            _manifest.verify(group, f"results store {path}, result {group.name!r}", "result")
    parts = [xr.open_zarr(group, zarr_format=3, consolidated=False, chunks={}) for group in groups]
    merged = (
        xr.merge(parts, join="outer", compat="override", combine_attrs="drop")
        if parts
        else xr.Dataset()
    )
    for part in parts:
        for name, var in part.data_vars.items():
            merged[name].attrs = dict(var.attrs)  # each result's provenance
    for part in parts:  # keep each layer order as computed (outer joins sort otherwise)
        for dim in (RUN, LAYER):
            if dim in part.dims and dim in merged.dims and len(part[dim]) == len(merged[dim]):
                merged = merged.reindex({dim: part[dim].values})
    return merged


def read_sg_quality(runs: Mapping[str, str | os.PathLike]):
    """Each checkpoint's ``sg_quality.csv`` as one DataArray ``(run, measure, position, step)``.

    Parameters
    ----------
    runs
        Run name → checkpoint directory. Runs without the table (no SG, or measured
        off) are left out.

    Returns
    -------
    xarray.DataArray
        ``sg_quality``: the measures of :meth:`training.rules.SyntheticGradients.quality`
        (``sg_cosine``, ``sg_relative_error``, ``target_cosine``, ``target_relative_error``)
        per SG position (the block it follows) and optimizer step; NaN where a run has no
        such position or step.
    """
    import pandas as pd
    import xarray as xr

    from repsim.checkpoints import SG_QUALITY

    frames = []
    for run, path in runs.items():
        file = Path(path) / SG_QUALITY
        if not file.is_file():
            continue
        try:
            df = pd.read_csv(file)
            df = df[["step", "position", "measure", "value"]].astype(
                {"step": int, "position": int, "measure": str, "value": float}
            )
        except (ValueError, KeyError, pd.errors.ParserError) as err:
            raise ValueError(f"{file} is damaged ({err}); retrain to rewrite it") from err
        frames.append(df.assign(**{RUN: run}))
    if not frames:
        return xr.DataArray(
            np.zeros((0, 0, 0, 0)), dims=(RUN, "measure", "position", "step"), name="sg_quality"
        )
    table = pd.concat(frames).set_index([RUN, "measure", "position", "step"])["value"]
    da = xr.DataArray.from_series(table[~table.index.duplicated(keep="last")])
    kept = [r for r in runs if r in set(da[RUN].values)]
    return da.reindex({RUN: kept}).rename("sg_quality")


def read_histories(runs: Mapping[str, str | os.PathLike], *, on_error=None):
    """The ``history.csv`` of each checkpoint as one Dataset ``(run, epoch)``.

    Parameters
    ----------
    runs
        Run name → checkpoint directory. Runs without a history are left out.
    on_error
        ``on_error(run, err)`` is called for a history that cannot be read (and the run is
        left out); without it, the ValueError naming the file is raised.

    Returns
    -------
    xarray.Dataset
        One float variable per column (``train_accuracy``, ``test_loss``, ...); epochs a
        run did not reach are NaN.
    """
    import pandas as pd
    import xarray as xr

    from repsim.checkpoints import HISTORY

    frames = {}
    for run, path in runs.items():
        file = Path(path) / HISTORY
        if not file.is_file():
            continue
        try:
            try:
                frame = pd.read_csv(file)
                if EPOCH not in frame:
                    raise ValueError("it has no 'epoch' column")
                frames[run] = frame.set_index(EPOCH).astype(float)
            except (ValueError, OSError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(
                    f"{file} is not a readable history ({first}); repair or delete it"
                ) from err
        except ValueError as err:
            if on_error is None:
                raise
            on_error(run, err)
    if not frames:
        return xr.Dataset(coords={RUN: [], EPOCH: []})
    parts = [xr.Dataset.from_dataframe(f).expand_dims({RUN: [run]}) for run, f in frames.items()]
    return xr.concat(parts, dim=RUN, join="outer")
