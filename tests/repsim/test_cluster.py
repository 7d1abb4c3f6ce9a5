"""repsim.cluster: a report whose per-run work runs as tasks on a Dask cluster writes the
same results.zarr as the serial report; the parts of runs analysed apart are combined as a
joint analysis would, or refused where they disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from repsim import checkpoints, cluster, report, runs, store
from repsim.names import RUN

distributed = pytest.importorskip("distributed")

#: Small stimulus sets: the report's numbers, not its speed, are under test.
OPTIONS = ["--quiet", "--stimuli", "mnist-5k:test:40", "--train-stimuli", "mnist-5k:train:400"]


def _checkpoints(root, history=True):
    from training.model import MLP

    for seed, name in enumerate(("bp", "dfa/seed-0", "dfa/seed-1")):
        torch.manual_seed(seed)
        model = MLP(depth=3, width=16)
        checkpoints.save(
            root / name,
            {"model": {"factory": "training.model:MLP", "kwargs": {"depth": 3, "width": 16}},
             "layers": model.layer_names, "dataset": "mnist-5k",
             "method": {"name": "dfa" if seed else "bp", "sg_layers": []}},
            model.state_dict(),
            history=[{"epoch": 1, "train_accuracy": 0.5, "test_accuracy": 0.4}] if history else None,
        )  # fmt: skip
    return root


def _assert_same_results(a, b):
    serial, clustered = store.open_results(a), store.open_results(b)
    assert list(serial.data_vars) == list(clustered.data_vars)
    for name in serial.data_vars:
        x, y = serial[name].load(), clustered[name].load()
        assert x.dims == y.dims and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x.values, y.values, err_msg=name)  # every bit
        for coord in x.coords:
            np.testing.assert_array_equal(x[coord].values, y[coord].values, err_msg=coord)
        drop = {"activations"}  # where each report keeps its activations
        assert {k: v for k, v in x.attrs.items() if k not in drop} == {
            k: v for k, v in y.attrs.items() if k not in drop
        }, name


@pytest.mark.slow
def test_a_report_on_the_cluster_writes_the_serial_reports_results(dask_client, tmp_path, capsys):
    ckpt = _checkpoints(tmp_path / "ckpt")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers: equal thread counts, equal bits
    try:
        assert report.main([str(ckpt), *OPTIONS, "--out", str(tmp_path / "serial")]) == 0
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    results = report.report(
        ckpt,
        client=dask_client,
        out=tmp_path / "cluster",
        quiet=True,
        stimuli="mnist-5k:test:40",
        train_stimuli="mnist-5k:train:400",
    )
    assert set(results[RUN].values) == {"bp", "dfa/seed-0", "dfa/seed-1"}
    out = capsys.readouterr().out
    # each run's extraction ran on a worker, and its line came back
    assert "dfa/seed-1: 3 layers × 40 stimuli → " in out
    _assert_same_results(
        tmp_path / "serial" / "results.zarr", tmp_path / "cluster" / "results.zarr"
    )
    for figure in ("rdm", "probes", "weight_norm", "learning_curves"):
        assert (tmp_path / "cluster" / "figures" / f"{figure}.png").is_file()
    with pytest.raises(TypeError, match="unknown option 'stimulus'; the options are"):
        report.report(ckpt, client=dask_client, stimulus="mnist-5k:test:40")


def test_a_run_that_fails_on_a_worker_is_reported_and_the_others_go_on(dask_client):
    good = runs.from_model(torch.nn.Sequential(torch.nn.Linear(4, 3)), ["0"], name="good")
    bad = runs.from_model(torch.nn.Sequential(torch.nn.ReLU()), ["0"], name="bad")  # no weight
    failed = []
    from repsim import norms

    combined = cluster.map_runs(
        dask_client, norms.analyse, [good, bad], on_error=lambda run, err: failed.append((run, err))
    )
    assert list(combined[RUN].values) == ["good"]
    assert [run for run, _ in failed] == ["bad"]
    assert isinstance(failed[0][1], ValueError)
    with pytest.raises(ValueError, match="no weight"):
        cluster.map_runs(dask_client, norms.analyse, [bad])


def _part(run: str, index: list[int], **attrs) -> xr.Dataset:
    da = xr.DataArray(
        np.ones((1, 2, len(index))),
        dims=(RUN, "layer", "stimulus"),
        coords={RUN: [run], "layer": ["a", "b"], "index": ("stimulus", index)},
        attrs={"runs": [run], "sg_layers": {run: []}, **attrs},
    )
    return xr.Dataset({"x": da})


def test_parts_are_combined_as_one_analysis_of_every_run_or_refused():
    both = cluster._combine([_part("r1", [0, 1], metric="m"), _part("r2", [0, 1], metric="m")])
    assert both.x.attrs == {"runs": ["r1", "r2"], "sg_layers": {"r1": [], "r2": []}, "metric": "m"}
    assert both.x.sizes == {RUN: 2, "layer": 2, "stimulus": 2}
    with pytest.raises(ValueError, match="run 'r2' was analysed over other 'index' values"):
        cluster._combine([_part("r1", [0, 1]), _part("r2", [1, 2])])
    with pytest.raises(ValueError, match="run 'r2' has metric 'n', run 'r1' 'm'"):
        cluster._combine([_part("r1", [0, 1], metric="m"), _part("r2", [0, 1], metric="n")])


def test_report_raises_when_no_step_could_run(tmp_path, capsys):
    ckpt = _checkpoints(tmp_path / "ckpt", history=False)  # no learning curves either
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RuntimeError, match=r"no step of python -m repsim\.report could run"):
        report.report(ckpt, out=tmp_path / "file" / "out", quiet=True)
    assert "Not a directory" in capsys.readouterr().err


def test_a_cluster_without_workers_or_of_no_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="a cluster needs at least 1 worker, got 0"):
        cluster.connect(workers=0).__enter__()
    with (
        distributed.LocalCluster(n_workers=0, dashboard_address=":0") as empty,
        distributed.Client(empty) as client,
        pytest.raises(ValueError, match="the Dask cluster has no workers: start some with"),
    ):
        cluster.check_shared(client, tmp_path)


def test_tasks_share_the_gpus_round_robin_and_use_the_workers_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what dask's nanny gives each worker
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        assert cluster.prepare_task("auto", 5) == (f"cuda:{5 % gpus}" if gpus else "cpu")
        assert torch.get_num_threads() == 1
        assert cluster.prepare_task("cpu", 5) == "cpu"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
        assert [cluster.prepare_task("auto", i) for i in range(6)] == [
            "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"
        ]  # fmt: skip
        assert cluster.prepare_task("cuda", 6) == "cuda:2"
        assert cluster.prepare_task("cuda:3", 0) == "cuda:3"  # a device named is used as given
    finally:
        torch.set_num_threads(before)
