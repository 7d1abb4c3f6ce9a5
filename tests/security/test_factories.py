"""A checkpoint.json names a model to build, never code to run (issue 11, items 1, 4, 7)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repsim import checkpoints, loading
from repsim.extract import main as extract_main

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path, model_spec, *, depth=2, width=8) -> Path:
    """A real checkpoint of training.model:MLP whose checkpoint.json says ``model_spec``."""
    from training.model import MLP

    torch.manual_seed(0)
    net = MLP(depth=depth, width=width)
    meta = {"name": path.name, "model": model_spec, "layers": net.layer_names,
            "dataset": "mnist-5k", "method": {"name": "bp"}}  # fmt: skip
    return checkpoints.save(path, meta, net.state_dict())


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "thesis").mkdir(parents=True)
    (victim / "thesis" / "ch1.tex").write_text("years of work")
    return victim


def _extract(path: Path, *flags: str) -> int:
    return extract_main([str(path), "--quiet", "--stimuli", "mnist-5k:test:20", *flags])


# ------------------------------------------------------------------- the three exploits


@pytest.mark.parametrize("trust", [False, True])
def test_a_nested_load_cannot_run_a_shell_command(tmp_path, monkeypatch, capsys, trust):
    ckpt = _checkpoint(tmp_path / "ckpt", {
        "factory": "repsim.checkpoints:load",
        "kwargs": {"path": ".", "model": "os:system",
                   "model_kwargs": {"command": f"echo PWNED > {tmp_path / 'marker'}"}},
    })  # fmt: skip
    monkeypatch.chdir(ckpt)
    assert _extract(ckpt, *(["--trust"] if trust else [])) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "marker").exists()
    assert err.count("\n") == 1 and "not a model constructor" in err
    if trust:  # trusted, load runs, but what it read from the file is not trusted
        assert "'os:system'" in err


@pytest.mark.parametrize("trust", [False, True])
def test_a_save_factory_cannot_replace_a_directory(tmp_path, capsys, trust):
    victim = _victim(tmp_path)
    ckpt = _checkpoint(tmp_path / "ckpt", {
        "factory": "repsim.checkpoints:save",
        "kwargs": {"path": str(victim), "meta": {}, "model_state": {}},
    })  # fmt: skip
    assert _extract(ckpt, *(["--trust"] if trust else [])) == 2
    err = capsys.readouterr().err
    assert (victim / "thesis" / "ch1.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "victim"]
    assert ("is not a checkpoint" if trust else "not a model constructor") in err


@pytest.mark.parametrize("trust", [False, True])
def test_a_training_factory_cannot_train_over_a_directory(tmp_path, capsys, trust):
    victim = _victim(tmp_path)
    ckpt = _checkpoint(tmp_path / "ckpt", {
        "factory": "training.train:main",
        "kwargs": {"argv": ["--depth", "2", "--width", "8", "--epochs", "1", "--quiet",
                            "--out", str(victim)]},
    })  # fmt: skip
    assert _extract(ckpt, *(["--trust"] if trust else [])) == 2
    err = capsys.readouterr().err
    assert (victim / "thesis" / "ch1.tex").read_text() == "years of work"
    assert sorted(p.name for p in victim.iterdir()) == ["thesis"]
    assert ("is not a checkpoint" if trust else "not a model constructor") in err


# ------------------------------------------------------------------- what may be named


@pytest.mark.parametrize(
    "spec",
    ["repsim.checkpoints:load", "repsim.checkpoints:save", "training.train:main", "os:system",
     "subprocess:Popen", "torch:load", "training.model:torch.load", "builtins:eval"],
)  # fmt: skip
def test_only_model_constructors_may_be_named_by_a_file(spec):
    with pytest.raises(PermissionError, match=r"not a model constructor.*--trust"):
        checkpoints.resolve_factory(spec)


def test_a_file_cannot_import_a_module_outside_the_model_modules():
    assert "this_module_does_not_exist_anywhere" not in sys.modules
    with pytest.raises(PermissionError, match=r"importing this_module_does_not_exist_anywhere"):
        checkpoints.resolve_factory("this_module_does_not_exist_anywhere:Net")


def test_a_registered_function_may_be_named(tmp_path):
    net = _checkpoint(tmp_path / "ckpt", {"factory": f"{__name__}:registered_mlp",
                                          "kwargs": {"width": 8}})  # fmt: skip
    model, info = checkpoints.load(net)
    assert info.factory == f"{__name__}:registered_mlp" and model.block1.linear.out_features == 8
    with pytest.raises(PermissionError, match=r"not a model constructor"):
        checkpoints.resolve_factory(f"{__name__}:unregistered_mlp")


@checkpoints.model_factory
def registered_mlp(width: int = 8) -> torch.nn.Module:
    from training.model import MLP

    return MLP(depth=2, width=width)


def unregistered_mlp(width: int = 8) -> torch.nn.Module:
    return registered_mlp(width)


def test_legit_checkpoints_still_load(tmp_path):
    ours = _checkpoint(tmp_path / "ours", {"factory": "training.model:MLP",
                                           "kwargs": {"depth": 2, "width": 8}})  # fmt: skip
    model, _ = checkpoints.load(ours)
    assert model.depth == 2
    kwargs = {"d_model": 8, "nhead": 2, "dim_feedforward": 16}
    layer = torch.nn.TransformerEncoderLayer(**kwargs)
    checkpoints.save(tmp_path / "tnn", {"model": {"factory": "torch.nn:TransformerEncoderLayer",
                     "kwargs": kwargs}, "layers": ["linear1", "linear2"]}, layer.state_dict())  # fmt: skip
    model, info = checkpoints.load(tmp_path / "tnn")
    assert info.layers == ("linear1", "linear2")
    assert checkpoints.weights_sha256(model) == checkpoints.weights_sha256(layer)
    # a user-named factory (not allowed in the file) is trusted because the user named it
    bad = _checkpoint(tmp_path / "bad", {"factory": f"{__name__}:unregistered_mlp",
                                         "kwargs": {"width": 8}})  # fmt: skip
    with pytest.raises(PermissionError):
        checkpoints.load(bad)
    model, _ = checkpoints.load(bad, model=f"{__name__}:unregistered_mlp")
    assert model.block2.linear.in_features == 8


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("training.model:MLP", r"'model' must be a JSON object"),
        ({"factory": "torch.nn:Linear", "kwargs": {"in_features": -5, "out_features": 3}},
         r"failed with kwargs .*RuntimeError: Trying to create tensor with negative dimension"),
        ({"factory": "training.model:MLP", "kwargs": {"depth": 2, "widht": 8}},
         r"rejected kwargs .*unexpected keyword argument 'widht'.*its parameters are"),
        ({"factory": "training.model:MLP", "kwargs": {"depth": 0}},
         r"failed with kwargs .*ValueError: depth must be a positive integer"),
        ({"factory": "training.model:MLP", "kwargs": [2, 8]}, r"must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_model_specs_are_one_line_errors(tmp_path, capsys, spec, match):
    ckpt = _checkpoint(tmp_path / "ckpt", spec)
    with pytest.raises(ValueError, match=match):
        checkpoints.load(ckpt)
    assert _extract(ckpt) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_kwargs_from_a_file_must_be_json_values(tmp_path):
    with pytest.raises(ValueError, match=r"model kwargs width are not JSON values"):
        loading._build("training.model:MLP", {"width": object()}, trust=False, from_file=True)


# ------------------------------------------------------------------- build on meta first


_PEAK = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "repsim.extract", sys.argv[1], "--quiet"],
                      capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(proc.returncode, peak // 1024)
sys.stderr.write(proc.stderr)
"""


@pytest.mark.parametrize("width", [30_000, 10**9])
def test_huge_kwargs_fail_before_allocating(tmp_path, width):
    ckpt = _checkpoint(tmp_path / "ckpt", {"factory": "training.model:MLP",
                                           "kwargs": {"depth": 2, "width": width}})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(ckpt)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)  # fmt: skip
    code, peak_mb = map(int, proc.stdout.split())
    assert code == 2, proc.stderr
    assert (
        proc.stderr.count("\n") == 1 and "block2.linear.weight is (8, 8) in the file" in proc.stderr
    )
    assert peak_mb < 500, f"peak RSS {peak_mb} MB"  # the model at width 30000 needs 3.7 GB


def test_a_model_over_the_size_limit_is_refused_before_allocation(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt", {"factory": "training.model:MLP",
                                           "kwargs": {"depth": 2, "width": 8}})  # fmt: skip
    with pytest.raises(
        ValueError, match=r"GiB of parameters and buffers, over the limit.*--max-model-gb"
    ):
        checkpoints.load(ckpt, max_model_bytes=1000)
    assert checkpoints.load(ckpt, max_model_bytes=10**6)[0].depth == 2
    assert _extract(ckpt, "--max-model-gb", "1e-6") == 2
    assert "over the limit" in capsys.readouterr().err
    assert _extract(ckpt, "--max-model-gb", "0") == 2
    assert "--max-model-gb must be a positive number" in capsys.readouterr().err
