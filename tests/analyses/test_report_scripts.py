"""The scripts that made analyses/REPORT.md run end to end on a tiny sweep: the parallel
sweep gives the same checkpoints as ``training.sweep``, and make_report writes a report with
a verdict for every claim and every figure it links."""

import json
import re
import subprocess
import sys

import pytest
import torch

from repsim import checkpoints
from tests.conftest import ROOT

TINY = ["--depth", "3", "--epochs", "2", "--data", "mnist-5k"]


@pytest.mark.slow
def test_parallel_sweep_then_report(tmp_path):
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, "analyses/paper_sweep_parallel.py", "--preset", "quick",
           "--seeds", "0,1", "--device", "cpu", "--out", str(ckpt), *TINY]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    runs = dict(checkpoints.discover(ckpt))
    assert sorted(runs) == sorted(
        f"{m}/seed-{s}" for m in ("bp", "sg-single", "sg-full", "dfa") for s in (0, 1)
    )
    # the same run as `training.sweep` trains: same config, and the same weights on CPU
    # with the same number of threads (each worker uses one; sums in matmuls depend on it)
    from training import sweep

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert sweep.main(["--preset", "quick", "--methods", "dfa", "--seeds", "0,1",
                           "--out", str(tmp_path / "serial"), "--quiet", *TINY]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    meta = checkpoints.read_meta(tmp_path / "serial/dfa/seed-1")
    assert checkpoints.read_meta(runs["dfa/seed-1"])["config"] == meta["config"]
    a, _ = checkpoints.read_tensors(runs["dfa/seed-1"] / checkpoints.MODEL)
    b, _ = checkpoints.read_tensors(tmp_path / "serial/dfa/seed-1" / checkpoints.MODEL)
    assert all(torch.equal(a[k], b[k]) for k in a)

    out = tmp_path / "report"
    subprocess.run(
        [sys.executable, "analyses/make_report.py", "--ckpt", str(ckpt), "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    text = (out / "REPORT.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == 11, text  # one verdict per claim
    assert all(re.search(r"\*\*(holds|partly|does not hold)\*\* \(\d/2 seeds\)", r) for r in rows)
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
        assert (out / link).is_file(), link
    numbers = json.loads((out / "figures" / "numbers.json").read_text())
    assert set(numbers["nearly_constant_from"]) == set(runs)
