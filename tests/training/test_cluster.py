"""Sweeps on a Dask cluster (training.sweep.run_sweep with a client, --workers, --scheduler):
the same checkpoints as the serial sweep, a killed worker costs only its run's current epoch,
and a cluster that cannot do the job says so before any run trains."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from repsim import checkpoints, cluster
from training import sweep

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
#: The four runs of the paper on a tiny net: every rule, 2 epochs each.
PLAN = sweep.configs("quick", list(sweep.RUNS), [0], depth=2, width=16, epochs=2, batch_size=64)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as on each worker (dask's nanny sets OMP_NUM_THREADS=1): runs are
    bit-identical only at equal thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    with one_thread():
        results = sweep.run_sweep(PLAN, out, device="cpu", progress=False)
    assert [r.error for r in results] == [None] * len(PLAN)
    return out


def _same_checkpoint(a: Path, b: Path) -> None:
    for name in (checkpoints.MODEL, checkpoints.EXTRAS):  # weights, SG modules, Adam's state
        x, _ = checkpoints.read_tensors(a / name)
        y, _ = checkpoints.read_tensors(b / name)
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), f"{b / name}: {key}"
    untimed = [
        {k: v for k, v in row.items() if k != "time_s"} for row in checkpoints.read_history(a)
    ]
    assert untimed == [
        {k: v for k, v in row.items() if k != "time_s"} for row in checkpoints.read_history(b)
    ]
    meta_a, meta_b = checkpoints.read_meta(a), checkpoints.read_meta(b)
    assert meta_a["config"] == meta_b["config"] and meta_a["epoch"] == meta_b["epoch"]


@pytest.mark.slow
def test_a_sweep_on_the_cluster_equals_the_serial_sweep(dask_client, serial, tmp_path):
    results = sweep.run_sweep(PLAN, tmp_path, progress=False, client=dask_client)
    assert [r.name for r in results] == list(PLAN)
    assert [r.error for r in results] == [None] * len(PLAN)
    assert all(r.where.startswith("cpu on tcp://") for r in results)
    assert len({r.where for r in results}) == 2  # both workers trained
    for name in PLAN:
        _same_checkpoint(serial / name, tmp_path / name)
    # a finished run is skipped on the cluster too
    again = sweep.run_sweep(PLAN, tmp_path, progress=False, client=dask_client)
    assert [r.resumed_after for r in again] == [2] * len(PLAN)
    assert [len(r.history) for r in again] == [2] * len(PLAN)


@pytest.mark.slow
def test_a_killed_worker_costs_only_its_runs_current_epoch(dask_client, tmp_path):
    cfg = dataclasses.replace(PLAN["bp"], epochs=12, batch_size=32)  # ~0.2 s an epoch
    plan = {"bp": cfg}
    with one_thread():
        sweep.run_sweep(plan, tmp_path / "straight", device="cpu", progress=False)
    results = []
    sweeping = threading.Thread(
        target=lambda: results.extend(
            sweep.run_sweep(plan, tmp_path / "killed", progress=False, client=dask_client)
        )
    )
    sweeping.start()
    meta = tmp_path / "killed" / "bp" / checkpoints.META
    deadline = time.monotonic() + 60
    while not (meta.is_file() and checkpoints.read_meta(meta.parent)["epoch"] >= 2):
        assert time.monotonic() < deadline, "the run never reached epoch 2"
        time.sleep(0.02)
    (worker,) = [w for w, keys in dask_client.processing().items() if keys]
    pid = dask_client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, signal.SIGKILL)
    sweeping.join(timeout=120)
    assert not sweeping.is_alive()
    (result,) = results
    assert result.error is None
    assert 2 <= result.resumed_after < cfg.epochs  # the retry resumed from the checkpoint
    assert len(result.history) == cfg.epochs
    _same_checkpoint(tmp_path / "straight" / "bp", tmp_path / "killed" / "bp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_a_clear_error_within_seconds(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    argv = ["--depth", "2", "--width", "16", "--epochs", "1", "--out", str(tmp_path / "ck")]
    assert sweep.main([*argv, "--scheduler", address]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert f"no Dask scheduler answers at {address}" in err and "dask scheduler" in err
    assert not list(tmp_path.rglob(checkpoints.META))  # nothing trained
    connecting = cluster.connect("tcp://")
    with pytest.raises(ValueError, match="not a scheduler address like tcp://host:8786"):
        connecting.__enter__()


def test_a_worker_that_cannot_see_the_output_is_named_before_any_run(tmp_path):
    """What each worker runs (``_probe_shared``), and the error ``check_shared`` makes of a
    worker's answer. (A real worker with another view of the filesystem needs another
    machine or user; an earlier test that dropped a worker to ``nobody`` hung in CI.)"""
    from types import SimpleNamespace

    from repsim.cluster import _probe_shared, check_shared

    (tmp_path / "token").write_bytes(b"")
    assert _probe_shared(str(tmp_path), "token") is None
    assert "does not see" in _probe_shared(str(tmp_path), "missing")
    assert list(p.name for p in tmp_path.iterdir()) == ["token"]  # its own file is gone
    answers = {
        "tcp://10.0.0.2:4000": "does not see /data/ck (the file ... is missing)",
        "tcp://w": None,
    }
    client = SimpleNamespace(run=lambda fn, *args: answers)
    with pytest.raises(
        PermissionError,
        match=r"worker tcp://10.0.0.2:4000 does not see .*the workers must share the output directory",
    ):
        check_shared(client, tmp_path / "ck")
    with pytest.raises(ValueError, match="no workers"):
        check_shared(SimpleNamespace(run=lambda fn, *args: {}), tmp_path / "ck")
    assert not [p for p in (tmp_path / "ck").iterdir()]  # the client's probe file is gone


@pytest.mark.slow
def test_the_readme_commands_on_a_local_cluster(tmp_path, capsys):
    """README, "Running on a cluster": a sweep, then a report, each on 2 local workers."""
    from repsim import report, store

    argv = ["--methods", "bp,dfa", "--depth", "2", "--width", "16", "--epochs", "1",
            "--out", str(tmp_path), "--workers", "2"]  # fmt: skip
    code = sweep.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:]  # (a rare failure here was once not captured)
    assert "started a Dask cluster of 2 worker processes" in captured.err
    assert "dashboard: http://" in captured.err
    assert f"{tmp_path / 'dfa'}: train" in captured.err  # one line per run as it finishes
    assert "bp" in captured.out and "dfa" in captured.out
    assert checkpoints.read_meta(tmp_path / "dfa")["complete"]
    small = ["--stimuli", "mnist-5k:test:40", "--train-stimuli", "mnist-5k:train:400"]
    code = report.main([str(tmp_path), "--workers", "2", "--quiet", "--no-baseline", *small])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:] + captured.out[-2000:]
    assert "started a Dask cluster of 2 worker processes" in captured.out
    results = store.open_results(tmp_path / "results.zarr")
    assert list(results.diag_l2.run.values) == ["bp", "dfa"]
    assert {"rdm", "probe_accuracy", "weight_norm"} <= set(results.data_vars)


@pytest.mark.slow
def test_the_serial_sweep_and_report_work_without_distributed(tmp_path):
    code = f"""
import sys
sys.modules["distributed"] = None  # an environment without the cluster extra
import repsim.report, training.sweep
assert training.sweep.main(["--methods", "bp", "--depth", "2", "--width", "16", "--epochs", "1",
                            "--out", {str(tmp_path)!r}, "--quiet"]) == 0
assert repsim.report.main([{str(tmp_path)!r}, "--quiet", "--stimuli", "mnist-5k:test:40",
                           "--train-stimuli", "mnist-5k:train:400", "--no-baseline"]) == 0
code = training.sweep.main(["--out", {str(tmp_path / "x")!r}, "--workers", "2"])
assert code == 2, code
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "needs the 'distributed' package: pip install \"repsim[cluster]\"" in done.stderr
    modules = "import sys, training.sweep, repsim.report, repsim.cluster; print('distributed' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", modules], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert imported.stdout.strip() == "False"
