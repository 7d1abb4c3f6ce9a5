"""Per-run work as tasks on a Dask cluster (``dask.distributed``): what sweeps and reports share.

A sweep trains one run per task and a report analyses one run per task; the same code runs
on a ``LocalCluster`` (a laptop, the tests, several GPUs of one machine) and on any cluster
with a scheduler address (``dask scheduler`` / ``dask worker``, dask-jobqueue, Kubernetes)::

    python -m training.sweep --preset quick --out /shared/ckpt --workers 4
    python -m repsim.report /shared/ckpt --scheduler tcp://host:8786

Every worker reads and writes the same directories as the client, so they must be on a
filesystem all of them share (:func:`check_shared` refuses to start otherwise); what travels
through the scheduler is small: configurations, results, and each analysed network once.

``distributed`` is an optional extra (``pip install "repsim[cluster]"``): this module
imports it only when a cluster is asked for, and the serial path never does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repsim.names import LAYER, RUN, SG_LAYERS

if TYPE_CHECKING:
    import xarray as xr

    from repsim.runs import Run

__all__ = [
    "CONNECT_TIMEOUT",
    "add_arguments",
    "check_shared",
    "connect",
    "map_runs",
    "prepare_task",
]

#: How long to wait for a scheduler to answer before saying it does not.
CONNECT_TIMEOUT = "5s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` and ``--workers N`` (one or the other) on a command's parser."""

    def positive(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"expected a number of workers ≥ 1, got {text!r}")
        return n

    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run each run as a task on the Dask cluster whose scheduler is at ADDRESS "
        "(tcp://host:8786); its workers must share the output directory",
    )
    group.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        help="start a Dask cluster of N worker processes (one thread each) on this machine "
        "and run each run as a task on it; GPUs are shared round-robin",
    )


def _distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            "running on a Dask cluster needs the 'distributed' package: "
            'pip install "repsim[cluster]" (or pip install distributed)'
        ) from err
    return distributed


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    log: Callable[[str], None] = print,
) -> Iterator[Any]:
    """A ``distributed.Client``: of the scheduler at ``scheduler``, or of a new local cluster
    of ``workers`` processes (one thread each, closed on exit); None when given neither.

    Raises
    ------
    ConnectionError
        No scheduler answers at ``scheduler`` within :data:`CONNECT_TIMEOUT`.
    ValueError
        ``scheduler`` is not an address, or ``workers`` is below 1.
    """
    if scheduler is None and workers is None:
        yield None
        return
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"no Dask scheduler answers at {scheduler} ({err}); start one with "
                f"`dask scheduler` and workers with `dask worker {scheduler}`, or use "
                "--workers N for a cluster on this machine"
            ) from None
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"--scheduler {scheduler!r} is not a scheduler address like tcp://host:8786 ({err})"
            ) from None
        with client:
            yield client
        return
    if workers < 1:
        raise ValueError(f"a cluster needs at least 1 worker, got {workers}")
    with (
        # one thread per worker process: a task is one whole run, and dask's nanny starts
        # each worker with OMP_NUM_THREADS=1, so N workers keep N cores busy
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        viewable = importlib.util.find_spec("bokeh") is not None
        log(
            f"started a Dask cluster of {workers} worker processes on this machine; "
            f"dashboard: {client.dashboard_link}"
            + ("" if viewable else " (pip install bokeh to view it)")
        )
        yield client


def prepare_task(device: str, index: int) -> str:
    """On a worker, before a task's work: its torch threads, and the device of task ``index``.

    ``"auto"`` (and ``"cuda"``) give task ``index`` the GPU ``index % n`` of the worker's
    ``n`` GPUs: several runs share each GPU at once, round-robin; without a GPU, the CPU.
    Any other device is used as given.
    """
    import torch

    # A worker runs as many tasks at once as it has threads, and dask's nanny starts it with
    # OMP_NUM_THREADS=1; torch's pool would otherwise take every core of the machine in every
    # worker process (N workers × cores threads fighting for the cores, every run slower).
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{index % torch.cuda.device_count()}"
    return "cpu" if device == "auto" else device


# ------------------------------------------------------------------- shared storage


def _probe_shared(path: str, token: str) -> str | None:
    """On a worker: why it cannot use ``path`` (None if it can): it must see the client's
    ``token`` file there and be able to write beside it."""
    here = Path(path)
    try:
        os.stat(here / token)
    except FileNotFoundError:
        return f"does not see {path} (the file the client just wrote there is missing)"
    except OSError as err:
        return f"cannot read {path} ({err.strerror})"
    mine = here / f".{token}-{secrets.token_hex(4)}"
    try:
        mine.write_bytes(b"")
        mine.unlink()
    except OSError as err:
        return f"cannot write {path} ({err.strerror})"
    return None


def check_shared(client: Any, path: str | os.PathLike) -> Path:
    """Check that every worker of ``client`` sees and can write directory ``path``; its
    absolute path (what the workers are given).

    The client writes a file there that each worker must see, and each worker writes one of
    its own: a worker on another machine with a local directory of the same name fails.

    Raises
    ------
    PermissionError
        A worker cannot see or write ``path``; the message names the worker.
    """
    path = Path(path).expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    token = f".repsim-shared-{secrets.token_hex(8)}"
    (path / token).write_bytes(b"")
    try:
        problems = client.run(_probe_shared, str(path), token)
    finally:
        (path / token).unlink(missing_ok=True)
    bad = {worker: why for worker, why in problems.items() if why}
    if bad:
        worker, why = next(iter(bad.items()))
        others = f" (and {len(bad) - 1} other worker(s))" if len(bad) > 1 else ""
        raise PermissionError(
            f"worker {worker}{others} {why}: the workers must share the output directory; "
            "put it on a filesystem every worker mounts at the same path and can write "
            "(NFS, Lustre, ...)"
        )
    if not problems:
        raise ValueError("the Dask cluster has no workers: start some with `dask worker ADDRESS`")
    return path


# ------------------------------------------------------------------- analyses


def _analyse_task(analyse: Callable, run: Run, options: dict, index: int):
    """On a worker: ``analyse([run], **options)``, with its log lines and warnings."""
    import dask

    lines: list[str] = []
    options = dict(options)
    if "device" in options:
        options["device"] = prepare_task(options["device"], index)
    else:
        prepare_task("cpu", index)
    if "progress" in options:
        options["progress"] = False  # a bar on a worker's stderr helps no one
    result, err = None, None
    # dask arrays read on a worker are computed there, in this task's thread: a task that
    # handed them to the cluster and waited would hold a worker thread the reads need
    with warnings.catch_warnings(record=True) as caught, dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("always")
        try:
            result = analyse([run], log=lines.append, **options).load()
        except (ValueError, TypeError) as error:  # the run's own problem: a retry cannot help
            err = error
    return result, lines, [(w.message, w.category) for w in caught], err


def map_runs(
    client: Any,
    analyse: Callable[..., xr.Dataset],
    runs: Sequence[Run],
    *,
    scattered: dict[str, Any] | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> xr.Dataset:
    """A runs-level ``analyse`` (:mod:`repsim.runs`) with each run's part one task on the
    cluster of ``client``, combined into the Dataset ``analyse(runs, **options)`` returns.

    Each run's network is sent once to one worker (``scattered``, run name → future, keeps
    them for the next analysis); activations are read and written there, in the stores of
    ``options["cache"]``, which the workers must share. ``log`` gets each run's lines as it
    finishes; warnings raised on a worker are raised again here.

    Raises
    ------
    repsim.runs.NothingAnalysed
        Every run failed (each was given to ``on_error``).
    ValueError
        The runs' parts disagree on what must be common (stimuli, options).
    PermissionError
        A worker cannot see or write ``options["cache"]`` (:func:`check_shared`).
    """
    from repsim.runs import NothingAnalysed

    distributed = _distributed()
    if options.get("cache") is not None:  # the workers write the activations stores there
        options["cache"] = check_shared(client, options["cache"])
    scattered = {} if scattered is None else scattered
    missing = [run for run in runs if run.name not in scattered]
    if missing:
        futures = client.scatter(missing, hash=False)
        scattered.update({run.name: f for run, f in zip(missing, futures, strict=True)})
    tag = f"{analyse.__module__}.{analyse.__name__}"
    tasks = {
        client.submit(
            _analyse_task,
            analyse,
            scattered[run.name],
            options,
            i,
            key=f"{tag}-{run.name}-{secrets.token_hex(4)}",
            pure=False,
            retries=2,
        ): run.name
        for i, run in enumerate(runs)
    }
    parts: dict[str, xr.Dataset] = {}
    for future in distributed.as_completed(tasks):
        name = tasks[future]
        try:
            result, lines, caught, err = future.result()
        except Exception as failure:  # a worker's exception, re-raised here
            result, lines, caught, err = None, [], [], failure
        for line in lines if log is not None else ():
            log(line)
        for message, category in caught:
            warnings.warn(message, category, stacklevel=2)
        if err is not None:
            if on_error is None:
                for other in tasks:
                    other.cancel()
                raise err
            on_error(name, err)
        else:
            parts[name] = result
    if not parts:
        raise NothingAnalysed(f"no run could be analysed ({len(runs)} failed)")
    return _combine([parts[run.name] for run in runs if run.name in parts])


def _combine(parts: list[xr.Dataset]) -> xr.Dataset:
    """One run per part → all runs along ``run``, with the attrs a joint analysis gives."""
    import numpy as np
    import xarray as xr

    names = [str(p[RUN].values[0]) for p in parts]
    layers = list(dict.fromkeys(str(v) for p in parts if LAYER in p.dims for v in p[LAYER].values))
    first = parts[0]
    for name, part in zip(names[1:], parts[1:], strict=True):
        for coord in set(first.coords) - {RUN, LAYER}:
            if coord in part.coords and not np.array_equal(part[coord].values, first[coord].values):
                raise ValueError(
                    f"run {name!r} was analysed over other {coord!r} values than run "
                    f"{names[0]!r}: analyse runs over the same stimuli"
                )
    if layers:
        parts = [p.reindex({LAYER: layers}) if LAYER in p.dims else p for p in parts]
    out = {}
    for var in first.data_vars:
        arrays = [p[var] for p in parts]
        combined = xr.concat(
            arrays, dim=RUN, join="exact", coords="minimal", compat="override", combine_attrs="drop"
        )
        combined.attrs = _merge_attrs(var, names, [a.attrs for a in arrays])
        out[var] = combined
    return xr.Dataset(out)


def _merge_attrs(var: str, names: list[str], attrs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The attrs of one result over all runs: ``runs`` and ``sg_layers`` joined, the rest
    (what every run shares: stimuli, options) checked to agree."""
    merged = dict(attrs[0])
    for name, part in zip(names[1:], attrs[1:], strict=True):
        for key, value in part.items():
            if key == "runs":
                merged[key] = [*merged[key], *value]
            elif key == SG_LAYERS:
                merged[key] = {**merged[key], **value}
            elif merged.get(key) != value:
                raise ValueError(
                    f"{var}: run {name!r} has {key} {value!r}, run {names[0]!r} "
                    f"{merged.get(key)!r}; analyse runs that differ there separately"
                )
    return merged
