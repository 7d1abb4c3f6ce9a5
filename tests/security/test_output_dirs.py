"""No command deletes what it did not write; crashes leave nothing behind (issue 11, items 2, 9)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repsim import _atomic, checkpoints
from training import sweep
from training.train import TrainConfig
from training.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
_TINY = ["--depth", "2", "--width", "16", "--epochs", "1", "--batch-size", "500", "--quiet"]


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.ones(2, 3)}


# ------------------------------------------------------------------- --out


def test_training_refuses_a_directory_it_did_not_write(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the reproduction, word for word
    (tmp_path / "docs" / "thesis").mkdir(parents=True)
    (tmp_path / "docs" / "thesis" / "ch1.tex").write_text("x\n")
    assert train_main([*_TINY, "--out", "docs"]) == 2
    err = capsys.readouterr().err
    assert (
        "docs exists and is not a checkpoint (it holds thesis" in err
        and "nothing was changed" in err
    )
    assert (tmp_path / "docs" / "thesis" / "ch1.tex").read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["thesis"]


def test_training_refuses_a_file_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert train_main([*_TINY, "--out", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt is a file, not a checkpoint directory" in capsys.readouterr().err
    assert train_main([*_TINY, "--out", str(tmp_path / "notes.txt" / "run")]) == 2
    assert "notes.txt is a file, not a directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_training_into_an_empty_directory_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    assert train_main([*_TINY, "--out", str(tmp_path / "run")]) == 0
    assert checkpoints.read_meta(tmp_path / "run")["epoch"] == 1


def test_sweep_checks_every_output_before_training(tmp_path, capsys):
    (tmp_path / "dfa").mkdir()
    (tmp_path / "dfa" / "mine.txt").write_text("x")
    argv = ["--out", str(tmp_path), "--methods", "bp,dfa", "--depth", "2", "--width", "16",
            "--epochs", "1", "--quiet"]  # fmt: skip
    assert sweep.main(argv) == 2
    assert "dfa exists and is not a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bp").exists()  # nothing trained before the refusal


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_parent_is_found_before_the_first_epoch(tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        assert train_main([*_TINY, "--epochs", "50", "--out", str(tmp_path / "ro" / "run")]) == 2
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert "cannot write a checkpoint" in capsys.readouterr().err


def test_a_file_system_that_refuses_directories_is_found_before_the_first_epoch(capsys):
    if not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    assert train_main([*_TINY, "--epochs", "50", "--out", "/sys/repsim-run"]) == 2
    assert "cannot write a checkpoint at /sys/repsim-run: creating a directory in /sys" in (
        capsys.readouterr().err
    )


def test_save_never_replaces_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "data.csv").write_text("1,2")
    (tmp_path / "file").write_text("f")
    with pytest.raises(ValueError, match=r"victim exists and is not a checkpoint"):
        checkpoints.save(tmp_path / "victim", {}, _state())
    (tmp_path / "victim" / "checkpoint.json").write_text("{not ours")
    with pytest.raises(ValueError, match=r"no checkpoint\.json written by repsim"):
        checkpoints.save(tmp_path / "victim", {}, _state())
    with pytest.raises(ValueError, match=r"is a file, not a checkpoint directory"):
        checkpoints.save(tmp_path / "file", {}, _state())
    assert (tmp_path / "victim" / "data.csv").read_text() == "1,2"
    assert (tmp_path / "file").read_text() == "f"


def test_save_keeps_files_a_user_put_in_a_checkpoint(tmp_path):
    checkpoints.save(tmp_path / "run", {"epoch": 1}, _state())
    (tmp_path / "run" / "activations.zarr" / "bp").mkdir(parents=True)
    (tmp_path / "run" / "activations.zarr" / "bp" / "zarr.json").write_text("{}")
    (tmp_path / "run" / "notes.md").write_text("n")
    checkpoints.save(tmp_path / "run", {"epoch": 2}, _state())
    assert checkpoints.read_meta(tmp_path / "run")["epoch"] == 2
    assert (tmp_path / "run" / "notes.md").read_text() == "n"
    assert (tmp_path / "run" / "activations.zarr" / "bp" / "zarr.json").read_text() == "{}"


def test_checkpoint_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoints.save(tmp_path / "run", {"epoch": 1}, _state())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755


# ------------------------------------------------------------------- leftovers and crashes


def test_leftovers_of_dead_writers_are_cleaned_by_one_policy(tmp_path):
    from repsim import store

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    host = _atomic._host()
    checkpoints.save(tmp_path / "run", {"epoch": 1}, _state())
    leftovers = [f".run.tmp-{host}-{dead}-ab12", f".run.old-{host}-{dead}-cd34",
                 f".a.zarr.tmp-{host}-{dead}-ef56", f".a.zarr.old-{host}-{dead}-ab78"]  # fmt: skip
    alive = [f".run.tmp-{host}-{os.getpid()}-0000", f".a.zarr.tmp-{host}-{os.getpid()}-1111",
             ".run.tmp-otherhost-1-2222", ".run.tmp-legacyname"]  # fmt: skip
    for name in leftovers + alive:
        (tmp_path / name).mkdir()
    checkpoints.read_meta(tmp_path / "run")  # a reader cleans the checkpoint's leftovers
    store.write_result(tmp_path / "a.zarr", _result())  # a writer cleans the store's
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["run", "a.zarr", *alive])  # live or unknown writers: kept
    os.utime(tmp_path / ".run.tmp-otherhost-1-2222", (0, 0))  # unchanged for a long time
    os.utime(tmp_path / ".run.tmp-legacyname", (0, 0))
    checkpoints.read_meta(tmp_path / "run")
    assert not (tmp_path / ".run.tmp-otherhost-1-2222").exists()
    assert not (tmp_path / ".run.tmp-legacyname").exists()


def _result():
    import xarray as xr

    return xr.DataArray([1.0, 2.0], dims="run", coords={"run": ["a", "b"]}, name="x")


_KILL_BETWEEN_RENAMES = """
import os, sys
real = os.replace
def replace(src, dst):
    real(src, dst)
    if ".old-" in os.fspath(dst):  # the previous checkpoint was just moved aside
        os._exit(9)
os.replace = replace
from training.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("new_version_left", [True, False])
def test_a_save_killed_between_its_renames_is_recovered(tmp_path, new_version_left):
    out = tmp_path / "run"
    argv = [*_TINY, "--epochs", "3", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 9, proc.stderr  # killed saving epoch 2: epoch 1 moved aside
    assert not out.exists()
    (old,) = tmp_path.glob(".run.old-*")
    (new,) = tmp_path.glob(".run.tmp-*")
    assert json.loads((old / "checkpoint.json").read_text())["epoch"] == 1
    assert json.loads((new / "checkpoint.json").read_text())["epoch"] == 2
    if not new_version_left:
        import shutil

        shutil.rmtree(new)
    cfg = TrainConfig(depth=2, width=16, epochs=3, batch_size=500)
    from training.train import train

    resumed = []
    train(cfg, out, progress=False, callback=lambda epoch, row: resumed.append(epoch))
    assert resumed == ([3] if new_version_left else [2, 3])  # not restarted from epoch 1
    assert [int(r["epoch"]) for r in checkpoints.read_history(out)] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ------------------------------------------------------------------- resume and config


def _trained(tmp_path: Path) -> Path:
    assert train_main([*_TINY, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def test_resuming_damaged_checkpoints_is_a_one_line_error(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out = _trained(tmp_path)
    meta = json.loads((out / "checkpoint.json").read_text())
    meta["epoch"] = 1
    meta["config"]["epochs"] = 3
    (out / "checkpoint.json").write_text(json.dumps(meta))
    argv = [*_TINY, "--epochs", "3", "--out", str(out)]
    extras = load_file(str(out / "extras.safetensors"))
    save_file(extras, str(out / "extras.safetensors"))  # the same tensors, no metadata
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "has no optimizer state" in err and err.count("\n") == 1
    weights = load_file(str(out / "model.safetensors"))
    weights["block1.linear.weight"][0, 0] = float("nan")
    save_file(weights, str(out / "model.safetensors"))
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "the checkpoint holds non-finite weights (block1.linear.weight)" in err
    assert "lower --lr" not in err


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--seed", str(10**20)], r"seed must be an integer from 0 to 2\*\*32 - 1"),
        (["--seed", "-1"], r"seed must be an integer from 0 to 2\*\*32 - 1"),
        (["--method", "sgprop", "--sg-alpha", "nan"], r"sg_alpha must be a finite number, got nan"),
    ],
)  # fmt: skip
def test_bad_numbers_get_messages_that_name_them(tmp_path, capsys, flags, match):
    import re

    assert train_main([*_TINY, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Overflow" not in err and "lower --lr" not in err
    assert not (tmp_path / "run").exists()
