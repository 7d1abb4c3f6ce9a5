"""Checkpoint directories: atomic save, round trip, recovery, and clear errors."""

import json

import pytest
import torch

from repsim import checkpoints


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4)}


def test_round_trip(tmp_path):
    path = checkpoints.save(
        tmp_path / "run", {"name": "run", "layers": ["a"]}, _state(1.0),
        extras={"rule/x": torch.ones(2)}, extras_metadata={"k": "v"},
        history=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
        snapshots={1: _state(0.5)},
    )  # fmt: skip
    meta = checkpoints.read_meta(path)
    assert meta["format_version"] == checkpoints.FORMAT_VERSION
    assert meta["layers"] == ["a"]
    tensors, _ = checkpoints.read_tensors(path / "model.safetensors")
    assert torch.equal(tensors["w"], torch.full((3, 2), 1.0))
    extras, extras_meta = checkpoints.read_tensors(path / "extras.safetensors")
    assert extras_meta == {"k": "v"}
    assert torch.equal(extras["rule/x"], torch.ones(2))
    assert checkpoints.read_history(path) == [
        {"epoch": "1", "loss": "0.5"},
        {"epoch": "2", "loss": "0.25"},
    ]
    snap, _ = checkpoints.read_tensors(path / "snapshots" / "epoch-1.safetensors")
    assert torch.equal(snap["w"], torch.full((3, 2), 0.5))


def test_save_replaces_and_keeps_snapshots(tmp_path):
    checkpoints.save(tmp_path / "run", {"epoch": 1}, _state(1.0), snapshots={1: _state(1.0)})
    checkpoints.save(tmp_path / "run", {"epoch": 2}, _state(2.0), snapshots={2: _state(2.0)})
    assert checkpoints.read_meta(tmp_path / "run")["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "epoch-1.safetensors", "epoch-2.safetensors"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    checkpoints.save(tmp_path / "run", {"epoch": 1}, _state(1.0))
    with pytest.raises(Exception):  # noqa: B017, PT011 (whatever safetensors raises)
        checkpoints.save(tmp_path / "run", {"epoch": 2}, {"w": "not a tensor"})
    assert checkpoints.read_meta(tmp_path / "run")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_recovers_from_a_crash_between_the_renames(tmp_path):
    checkpoints.save(tmp_path / "run", {"epoch": 1}, _state(1.0))
    (tmp_path / "run").rename(tmp_path / ".run.old-abc")  # as if killed right after the move
    assert checkpoints.read_meta(tmp_path / "run")["epoch"] == 1


def test_read_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"is not a checkpoint directory: it has no checkpoint\.json"
    ):
        checkpoints.read_meta(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{broken")
    with pytest.raises(ValueError, match="is not valid JSON"):
        checkpoints.read_meta(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a JSON object with a 'format_version' key"):
        checkpoints.read_meta(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        checkpoints.read_tensors(tmp_path / "bad.safetensors")
    assert checkpoints.read_history(tmp_path) == []
