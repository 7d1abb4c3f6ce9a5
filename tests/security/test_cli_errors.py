"""User mistakes end in one line that names the problem and the fix, never a traceback;
read-only checkpoints can be analysed with --out elsewhere."""

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from repsim import datasets, extract, rdm, report, store
from tests.conftest import fake_split, write_idx_split
from tests.repsim.test_report import _checkpoint

STIMULI = ["--quiet", "--stimuli", "mnist-5k:test:40"]


def _one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- datasets


def test_idx_splits_of_different_image_sizes_are_refused_before_training(tmp_path, capsys):
    from training import train

    data = tmp_path / "data"
    write_idx_split(data, "train", *fake_split(50, 0))
    write_idx_split(data, "test", *fake_split(20, 1, size=20))
    for split in ("train", "test"):
        with pytest.raises(
            ValueError, match=r"train images .* are 28×28 but its test images .* are 20×20"
        ):
            datasets.load(f"idx:{data}", split)
    argv = ["--data", f"idx:{data}", "--depth", "1", "--width", "4", "--epochs", "1", "--quiet"]
    assert train.main([*argv, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(
        capsys.readouterr().err, "t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"
    )
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---------------------------------------------------------------- --out


@pytest.mark.parametrize("command", [rdm.main, extract.main, report.main])
def test_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys, command):
    _checkpoint(tmp_path / "ckpt" / "bp", 0)
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    before = _listing(tmp_path)
    assert command([str(tmp_path / "ckpt"), *STIMULI, "--out", str(target)]) == 2
    _one_line_error(capsys.readouterr().err, f"--out {target} is an existing file")
    assert _listing(tmp_path) == before


def test_a_read_only_checkpoint_tree_is_analysed_with_out_elsewhere(tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "analysis"
    _checkpoint(ckpt / "bp", 0)
    _checkpoint(ckpt / "dfa", 1)
    before = _listing(ckpt)
    modes = {p: p.stat().st_mode for p in [ckpt, *ckpt.rglob("*")]}
    for p in modes:
        p.chmod(p.stat().st_mode & ~0o222)
    try:  # as root the modes do not stop a write: the listing below is the check that holds
        code = report.main([str(ckpt), *STIMULI, "--out", str(out)])
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert code == 0, capsys.readouterr().err
    assert _listing(ckpt) == before  # nothing written, renamed or touched in the checkpoints
    for name in ("activations.zarr", "probes-train.zarr", "probes-test.zarr", "results.zarr"):
        assert (out / name / "zarr.json").is_file(), name
    assert (out / "figures" / "learning_curves.png").is_file()
    assert set(store.open_results(out / "results.zarr").data_vars) >= {"diag_l2", "weight_norm"}


# ---------------------------------------------------------------- weights files


def test_a_fake_torchscript_archive_is_one_line(tmp_path, capsys):
    fake = tmp_path / "model.pt"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("archive/constants.pkl", b"garbage")
        z.writestr("archive/code/__torch__.py", b"garbage")
        z.writestr("archive/data.pkl", b"garbage")
    assert extract.main([str(fake), "--quiet"]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "looks like a TorchScript archive")
    assert f"{fake} looks like a TorchScript archive but cannot be loaded" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"PK\x03\x04 not a zip")
    assert extract.main([str(fake), "--quiet", "--model", "training.model:MLP", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------- concurrent writers


def test_a_run_committed_by_another_process_meanwhile_is_reused_or_refused(tmp_path, monkeypatch):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    x = torch.randn(10, 4)
    theirs = tmp_path / "theirs.zarr"
    extract.extract_to_zarr(net, x, ["0"], theirs, run="bp", device="cpu")
    real = os.replace

    def racing(src, dst):  # the other process commits just before our rename
        if Path(src).name.startswith(".ours.zarr.tmp-") and not Path(dst).exists():
            shutil.copytree(theirs / "bp", dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", racing)
    got = extract.extract_to_zarr(net, x, ["0"], tmp_path / "ours.zarr", run="bp", device="cpu")
    assert got.skipped
    np.testing.assert_array_equal(got.tree["0"]["activations"].values, net[0](x).detach().numpy())
    assert not list(tmp_path.glob(".ours.zarr.tmp-*"))
    shutil.rmtree(tmp_path / "ours.zarr" / "bp")
    with pytest.raises(ValueError, match=r"another process wrote run 'bp' .* at the same time"):
        extract.extract_to_zarr(net, x + 1, ["0"], tmp_path / "ours.zarr", run="bp", device="cpu")


# ---------------------------------------------------------------- stimuli


def _rdms(labels):
    n = len(labels)
    rng = np.random.default_rng(0)
    acts = xr.DataArray(
        rng.standard_normal((2, n, 5)), dims=("layer", "stimulus", "unit"),
        coords={"layer": ["a", "b"], "label": ("stimulus", labels)},
    )  # fmt: skip
    return rdm.rdm(acts)


def test_fewer_than_two_stimuli_per_class_is_refused_or_warned():
    with pytest.raises(ValueError, match="no class has two stimuli"):
        rdm.diag_l2(_rdms(list(range(10))))
    with pytest.warns(UserWarning, match=r"class\(es\) 2, 3 have a single stimulus"):
        rdm.diag_l2(_rdms([0, 0, 1, 1, 2, 3]))


def test_the_rdm_command_refuses_one_stimulus_per_class(tmp_path, capsys):
    _checkpoint(tmp_path / "bp", 0)
    assert rdm.main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:10"]) == 2
    _one_line_error(capsys.readouterr().err, "no class has two stimuli")
