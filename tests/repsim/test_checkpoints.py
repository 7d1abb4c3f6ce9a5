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
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        checkpoints.read_meta(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"expected a JSON object with a 'format_version' key"):
        checkpoints.read_meta(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match=r"is not a readable safetensors file"):
        checkpoints.read_tensors(tmp_path / "bad.safetensors")
    assert checkpoints.read_history(tmp_path) == []


# ------------------------------------------------------------------- load


class Net(torch.nn.Module):
    """A small model that is not in the project: external checkpoints are built from it."""

    def __init__(self, hidden: int = 6) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, hidden)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _net(hidden: int = 6, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net(hidden)


def _mlp_checkpoint(path, *, factory="training.model:MLP", depth=2, width=8, seed=0, **meta):
    from training.model import MLP

    torch.manual_seed(seed)
    model = MLP(depth=depth, width=width, in_features=784)
    kwargs = {"depth": depth, "width": width}
    checkpoints.save(
        path,
        {"name": path.name, "model": {"factory": factory, "kwargs": kwargs},
         "layers": model.layer_names, "dataset": "mnist-5k", "method": {"name": "bp"},
         "metrics": {"test_accuracy": 0.5}, **meta},
        model.state_dict(),
    )  # fmt: skip
    return model


def test_load_rebuilds_our_checkpoint(tmp_path):
    original = _mlp_checkpoint(tmp_path / "bp")
    model, info = checkpoints.load(tmp_path / "bp")
    x = torch.randn(5, 784)
    assert not model.training
    torch.testing.assert_close(model(x), original.eval()(x), rtol=0, atol=0)
    assert info.name == "bp"
    assert info.layers == ("block1", "block2")
    assert info.method == {"name": "bp"} and info.dataset == "mnist-5k"
    assert info.metrics == {"test_accuracy": 0.5}
    assert info.weights_sha256 == checkpoints.weights_sha256(original)


def test_a_json_factory_outside_the_allow_list_is_refused(tmp_path):
    torch.manual_seed(0)
    checkpoints.save(
        tmp_path / "run",
        {
            "model": {"factory": "tests.repsim.test_checkpoints:Net", "kwargs": {}},
            "layers": ["fc1"],
        },
        Net().state_dict(),
    )
    with pytest.raises(PermissionError, match=r"not a model constructor.*--trust"):
        checkpoints.load(tmp_path / "run")
    model, _ = checkpoints.load(tmp_path / "run", trust=True)
    assert isinstance(model, Net)
    model, _ = checkpoints.load(tmp_path / "run", model="tests.repsim.test_checkpoints:Net")
    assert isinstance(model, Net)  # a factory the user names is trusted


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (
            "torch.nn.functional:torch.load",
            PermissionError,
            "resolves to function torch.serialization.load",
        ),
        ("os:system", PermissionError, "not a model constructor"),
        ("torch.nn:_reduction", ValueError, "private names"),
        ("torch.nn:Linearr", ValueError, "did you mean Linear"),
        ("training.model", ValueError, "not of the form"),
        ("torch.nn:modules", ValueError, "not callable"),
    ],
)
def test_resolve_factory_errors(spec, error, match):
    with pytest.raises(error, match=match):
        checkpoints.resolve_factory(spec)


def test_an_unimportable_factory_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"cannot import 'no_such_pkg'.*PYTHONPATH"):
        checkpoints.resolve_factory("no_such_pkg:build", trust=True)


def test_factory_results_and_kwargs_are_checked(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"rejected kwargs"):
        checkpoints.load(tmp_path / "w.pt", model="tests.repsim.test_checkpoints:Net",
                         model_kwargs={"depth": 3}, layers=["fc1"])  # fmt: skip
    with pytest.raises(ValueError, match=r"returned a int, not a torch.nn.Module"):
        checkpoints.load(
            tmp_path / "w.pt", model="tests.repsim.test_checkpoints:seven", layers=["fc1"]
        )


def seven() -> int:
    return 7


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-nested", "pt-dataparallel"])
def test_external_weights_load_without_a_json(tmp_path, fmt):
    from safetensors.torch import save_file

    original = _net(hidden=5, seed=3)
    state = original.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "pt":
        torch.save(state, path)
    elif fmt == "pt-nested":
        torch.save({"state_dict": state, "epoch": 3, "lr": 0.1}, path)
    else:
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    model, info = checkpoints.load(
        path,
        model="tests.repsim.test_checkpoints:Net",
        model_kwargs={"hidden": 5},
        layers=["fc1", "act"],
    )
    x = torch.randn(4, 4)
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    assert info.name == "w" and info.layers == ("fc1", "act") and info.path == path.resolve()
    assert info.weights_sha256 == checkpoints.weights_sha256(original)


def test_a_pickled_model_is_refused_with_the_fix(tmp_path):
    torch.save(_net(), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"pickled Python objects.*state_dict\(\)"):
        checkpoints.load(
            tmp_path / "whole.pt", model="tests.repsim.test_checkpoints:Net", layers=["fc1"]
        )


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save({"epoch": 3, "weights": [torch.ones(2)]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"not a state_dict.*'epoch'"):
        checkpoints.load(
            tmp_path / "odd.pt", model="tests.repsim.test_checkpoints:Net", layers=["fc1"]
        )


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _net().state_dict()
    del state["fc2.bias"]
    state["extra.weight"] = torch.ones(2, 2)
    torch.save(state, tmp_path / "w.pt")
    kw = {"model": "tests.repsim.test_checkpoints:Net", "layers": ["fc1"]}
    with pytest.raises(
        ValueError,
        match=r"missing from the file: fc2.bias \(3,\).*not in the model: extra.weight \(2, 2\).*--no-strict",
    ):
        checkpoints.load(tmp_path / "w.pt", **kw)
    with pytest.warns(UserWarning, match=r"1 model keys left at their initial values"):
        model, _ = checkpoints.load(tmp_path / "w.pt", strict=False, **kw)
    torch.testing.assert_close(model.fc1.weight, state["fc1.weight"])


def test_shape_mismatches_are_listed_even_when_not_strict(tmp_path):
    torch.save(_net(hidden=7).state_dict(), tmp_path / "w.pt")
    for strict in (True, False):
        with pytest.raises(
            ValueError, match=r"fc1.weight is \(7, 4\) in the file but \(6, 4\) in the model"
        ):
            checkpoints.load(tmp_path / "w.pt", model="tests.repsim.test_checkpoints:Net",
                             layers=["fc1"], strict=strict)  # fmt: skip


def test_a_corrupt_safetensors_file_is_an_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match=r"not a readable safetensors file"):
        checkpoints.load(
            tmp_path / "w.safetensors", model="tests.repsim.test_checkpoints:Net", layers=["fc1"]
        )


def test_external_weights_need_an_architecture_and_layers(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"not the architecture.*--model"):
        checkpoints.load(tmp_path / "w.pt", layers=["fc1"])
    with pytest.raises(
        ValueError, match=r"say which modules.*leaf modules of this model: fc1, act, fc2"
    ):
        checkpoints.load(tmp_path / "w.pt", model="tests.repsim.test_checkpoints:Net")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown weights format '.onnx'"):
        checkpoints.load(tmp_path / "w.onnx", model="tests.repsim.test_checkpoints:Net")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        checkpoints.load(tmp_path / "nope.pt")


def test_a_torchscript_archive_carries_its_architecture(tmp_path):
    import warnings

    original = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(original).save(str(tmp_path / "net.pt"))
    model, info = checkpoints.load(tmp_path / "net.pt", layers=["fc1", "fc2"])
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), original(x))
    assert info.factory == "torchscript"
    assert info.weights_sha256 == checkpoints.weights_sha256(original)
    with pytest.raises(ValueError, match=r"TorchScript archive.*drop model="):
        checkpoints.load(
            tmp_path / "net.pt", model="tests.repsim.test_checkpoints:Net", layers=["fc1"]
        )


def test_weights_hash_tracks_values_names_and_dtypes():
    a = _net().state_dict()
    assert checkpoints.weights_sha256(a) == checkpoints.weights_sha256(
        {k: v.clone() for k, v in a.items()}
    )
    changed = {k: v.clone() for k, v in a.items()}
    changed["fc2.bias"][0] += 1e-6
    assert checkpoints.weights_sha256(changed) != checkpoints.weights_sha256(a)
    assert checkpoints.weights_sha256(
        {k: v.double() for k, v in a.items()}
    ) != checkpoints.weights_sha256(a)
    renamed = {k.replace("fc2", "fc3"): v for k, v in a.items()}
    assert checkpoints.weights_sha256(renamed) != checkpoints.weights_sha256(a)


def test_discover_finds_nested_runs_and_skips_stores_and_temporaries(tmp_path):
    for name in ("bp/seed-0", "bp/seed-1", "dfa"):
        _mlp_checkpoint(tmp_path / name)
    (tmp_path / "activations.zarr" / "x").mkdir(parents=True)
    (tmp_path / "activations.zarr" / "x" / "checkpoint.json").write_text("{}")
    (tmp_path / ".dfa.tmp-123").mkdir()
    (tmp_path / ".dfa.tmp-123" / "checkpoint.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a run")
    found = checkpoints.discover(tmp_path)
    assert [name for name, _ in found] == ["bp/seed-0", "bp/seed-1", "dfa"]
    assert found[2][1] == (tmp_path / "dfa").resolve()
    assert checkpoints.discover(tmp_path / "dfa") == [("dfa", (tmp_path / "dfa").resolve())]
    (tmp_path / "dfa").rename(tmp_path / ".dfa.old-abc")  # a save killed between its renames
    assert [name for name, _ in checkpoints.discover(tmp_path)] == ["bp/seed-0", "bp/seed-1", "dfa"]
    with pytest.raises(FileNotFoundError, match=r"is not a directory"):
        checkpoints.discover(tmp_path / "missing")


def test_the_architecture_may_be_given_as_a_callable(tmp_path):
    original = _net(hidden=4, seed=2)
    torch.save(original.state_dict(), tmp_path / "w.pt")
    model, info = checkpoints.load(
        tmp_path / "w.pt", model=Net, model_kwargs={"hidden": 4}, layers=["fc1"]
    )
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    assert info.factory == "tests.repsim.test_checkpoints:Net"
