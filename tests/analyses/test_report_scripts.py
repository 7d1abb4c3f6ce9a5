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
    out.mkdir()
    kept = ("<!-- sgfull:start -->\nS\n<!-- sgfull:end -->\n\n"
            "<!-- compare:start -->\nC\n<!-- compare:end -->")  # fmt: skip
    (out / "REPORT.md").write_text("# old\n\nold text\n\n" + kept + "\n")
    subprocess.run(
        [sys.executable, "analyses/make_report.py", "--ckpt", str(ckpt), "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    text = (out / "REPORT.md").read_text()
    assert "old text" not in text and text.rstrip().endswith(kept)  # other scripts' sections
    rows = [line for line in text.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == 11, text  # one verdict per claim
    assert all(re.search(r"\*\*(holds|partly|does not hold)\*\* \(\d/2 seeds\)", r) for r in rows)
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
        assert (out / link).is_file(), link
    numbers = json.loads((out / "figures" / "numbers.json").read_text())
    assert set(numbers["nearly_constant_from"]) == set(runs)


@pytest.mark.slow
def test_sgfull_variants_train_collect_report(tmp_path):
    """Two variants trained tiny, tabulated, checked against their configs, reported."""
    script = [sys.executable, "analyses/sgfull_variants.py"]
    tiny = ["--depth", "3", "--data", "mnist-5k"]
    out, figures = tmp_path / "runs", tmp_path / "figures"
    subprocess.run([*script, "train", "--variants", "linear,sig-cos", "--seeds", "0,1",
                    "--device", "cpu", "--out", str(out), "--epochs", "2", *tiny],
                   cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    meta = checkpoints.read_meta(out / "sig-cos/sg-full/seed-1")
    assert meta["config"]["sg_module"] == "sigmoid" and meta["config"]["lr_schedule"] == "cosine"
    collect = [*script, "collect", "--figures", str(figures), *tiny, "--epochs", "2"]
    wrong = subprocess.run([*collect, f"linear={out}/sig-cos/sg-full"], cwd=ROOT,
                           capture_output=True, text=True)  # fmt: skip
    assert wrong.returncode != 0 and "is not the 'linear' variant" in wrong.stderr
    # under a cosine schedule the number of epochs is part of a variant (it sets the decay)
    other = subprocess.run([*collect[:-1], "3", f"sig-cos={out}/sig-cos/sg-full"], cwd=ROOT,
                           capture_output=True, text=True)  # fmt: skip
    assert other.returncode != 0 and "epochs=2 (want 3)" in other.stderr
    assert not figures.exists()  # nothing half-written
    subprocess.run([*collect, f"linear={out}/linear/sg-full", f"sig-cos={out}/sig-cos/sg-full"],
                   cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    report = tmp_path / "REPORT.md"
    report.write_text("# R\n\n<!-- compare:start -->\nkept\n<!-- compare:end -->\n")
    subprocess.run([*script, "report", "--figures", str(figures), "--report", str(report)],
                   cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    text = report.read_text()
    assert text.index("<!-- sgfull:end -->") < text.index("<!-- compare:start -->")
    assert "kept" in text and (figures / "sgfull_variants.png").is_file()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`linear`", "`sig-cos`"]
    # the table's numbers are the histories' last epochs
    import csv

    with open(out / "sig-cos/sg-full/seed-1/history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    assert f"{100 * float(hist[-1]['train_accuracy']):.2f}" in rows[1]
    assert all(r.rstrip(" |").endswith("no") for r in rows)  # 2 tiny epochs: not 99 %
