"""Extraction: hooks equal a manual forward, modes are restored, every call is recorded,
stores round-trip, interruptions leave no complete-looking run, reruns are skipped only
when weights, stimuli and layers match; the command line on ours and external weights."""

import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from repsim import checkpoints, datasets, store
from repsim.extract import extract, extract_to_zarr, layer_names, main
from tests.conftest import ROOT


class TinyNet(nn.Module):
    """Defined here, not in the project: the external-weights path is tested on it."""

    def __init__(self, hidden: int = 16, n_in: int = 784) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.Tanh())
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(self.block(self.act(self.fc1(x))))


class Shared(nn.Module):
    """One module applied twice, and a module returning a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(5, 5)
        self.rnn = nn.GRU(5, 3, batch_first=True)

    def forward(self, x):
        h = torch.relu(self.shared(x))
        h = self.shared(h)
        out, _ = self.rnn(h.unsqueeze(1))
        return out


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x)))


def _tiny(seed=0, hidden=16, n_in=784) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(hidden, n_in)
    with torch.no_grad():  # make BatchNorm's running statistics non-trivial
        net.block[1].running_mean.normal_()
        net.block[1].running_var.uniform_(0.5, 2)
    return net


def test_hooks_capture_what_a_manual_forward_computes():
    net, x = _tiny(), torch.randn(37, 784)
    layers = ["fc1", "act", "block.0", "block.1", "block", "fc2"]
    tree = extract(net, x, layers, batch_size=37, device="cpu")
    net.eval()
    with torch.no_grad():
        h1 = net.fc1(x)
        h2 = net.act(h1)
        b0 = net.block[0](h2)
        b1 = net.block[1](b0)
        expected = [h1, h2, b0, b1, net.block[2](b1), net.fc2(net.block[2](b1))]
    assert tree.attrs["layers"] == layers
    for name, want in zip(layers, expected, strict=True):
        got = tree[name]["activations"]
        assert got.dims == ("stimulus", "unit") and got.dtype == np.float32
        np.testing.assert_array_equal(got.values, want.numpy())
    # in batches that do not divide the stimuli, the same up to float rounding
    batched = extract(net, x, layers, batch_size=8, device="cpu")
    for name in layers:
        np.testing.assert_allclose(
            batched[name]["activations"], tree[name]["activations"], rtol=1e-5, atol=1e-6
        )


def test_modes_device_and_grad_flags_are_restored():
    net = _tiny()
    net.train()
    net.block.eval()  # a mixture of modes must come back as it was
    modes = {name: m.training for name, m in net.named_modules()}
    extract(net, torch.randn(4, 784), ["block.1"], device="cpu")
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert all(p.requires_grad for p in net.parameters())
    assert net.block[1].num_batches_tracked.item() == 0  # ran in eval mode: no BN update
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_a_module_called_twice_records_each_call():
    torch.manual_seed(0)
    net, x = Shared(), torch.randn(6, 5)
    tree = extract(net, x, ["shared", "shared:2"], device="cpu")
    assert tree.attrs["layers"] == ["shared:1", "shared:2"]
    assert list(tree.children) == ["shared:1", "shared:2"]  # "shared:2" asked twice is one node
    with torch.no_grad():
        first = net.shared(x)
        second = net.shared(torch.relu(first))
    np.testing.assert_allclose(tree["shared:1"]["activations"], first.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tree["shared:2"]["activations"], second.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"called 2 time.*no call 3"):
        extract(net, x, ["shared:3"], device="cpu")


def test_tuple_outputs_take_the_first_tensor_unless_indexed():
    torch.manual_seed(0)
    net, x = Shared(), torch.randn(6, 5)
    tree = extract(net, x, ["rnn", "rnn[0]"], device="cpu")
    with torch.no_grad():
        out, h = net.rnn(net.shared(torch.relu(net.shared(x))).unsqueeze(1))
    np.testing.assert_allclose(tree["rnn"]["activations"], out.reshape(6, -1).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(tree["rnn[0]"]["activations"], tree["rnn"]["activations"])
    assert h.shape[:2] == (1, 6)  # the hidden state is (layers, batch, hidden): not batch-first
    with pytest.raises(
        ValueError, match=r"shape \(1, 6, 3\) does not have the batch \(6\) as its first"
    ):
        extract(net, x, ["rnn[1]"], device="cpu")
    with pytest.raises(ValueError, match=r"returns a tensor, not a tuple; drop \[0\]"):
        extract(net, x, ["shared[0]"], device="cpu")
    with pytest.raises(ValueError, match=r"element 5 of rnn's output"):
        extract(net, x, ["rnn[5]"], device="cpu")


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_outputs_flatten_in_channel_height_width_order(channels_last):
    torch.manual_seed(0)
    net, x = Conv(), torch.randn(3, 1, 6, 6)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    tree = extract(net, x, ["conv", "pool"], device="cpu")
    with torch.no_grad():
        conv = net.conv(x)
    acts = tree["conv"]["activations"].values
    assert acts.shape == (3, 3 * 6 * 6)
    c, h, w = 2, 4, 1
    np.testing.assert_allclose(acts[:, c * 36 + h * 6 + w], conv[:, c, h, w].numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts, conv.contiguous().reshape(3, -1).numpy(), rtol=1e-6)


def test_unknown_and_malformed_layers_are_errors_that_help():
    net, x = _tiny(), torch.randn(2, 784)
    with pytest.raises(
        ValueError, match=r"unknown layer 'fc3' \(did you mean 'fc2', 'fc1'.*layer_names\(model\)"
    ):
        extract(net, x, ["fc3"], device="cpu")
    with pytest.raises(ValueError, match=r"'fc1:0' is not 'module'"):
        extract(net, x, ["fc1:0"], device="cpu")
    with pytest.raises(ValueError, match=r"named more than once: fc1"):
        extract(net, x, ["fc1", "fc1"], device="cpu")
    with pytest.raises(ValueError, match=r"non-empty list"):
        extract(net, x, "fc1", device="cpu")
    assert layer_names(net) == ["fc1", "act", "block", "block.0", "block.1", "block.2", "fc2"]


def test_a_module_the_forward_never_calls_is_an_error():
    net = _tiny()
    net.unused = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"unused is not called"):
        extract(net, torch.randn(2, 784), ["unused"], device="cpu")


def test_dataarray_inputs_carry_their_coordinates():
    x = torch.randn(5, 784)
    da = xr.DataArray(
        x.numpy().T, dims=("pixel", "stimulus"),
        coords={"label": ("stimulus", [3, 1, 4, 1, 5]), "index": ("stimulus", [10, 11, 12, 13, 14])},
    )  # fmt: skip
    tree = extract(_tiny(), da, ["fc1"], device="cpu")
    assert tree["fc1"]["activations"].label.values.tolist() == [3, 1, 4, 1, 5]
    assert tree["fc1"]["activations"].index.values.tolist() == [10, 11, 12, 13, 14]
    np.testing.assert_allclose(
        tree["fc1"]["activations"], extract(_tiny(), x, ["fc1"], device="cpu")["fc1"]["activations"]
    )
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        extract(_tiny(), x, ["fc1"], labels=[1, 2], device="cpu")


def test_torchscript_models_record_the_submodules_their_forward_calls(tmp_path):
    net, x = _tiny(), torch.randn(9, 784)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net.eval()).save(str(tmp_path / "net.pt"))
    scripted, _ = checkpoints.load(tmp_path / "net.pt", layers=["fc1", "block"])
    got = extract(scripted, x, ["fc1", "act", "block", "fc2"], device="cpu")
    want = extract(net, x, ["fc1", "act", "block", "fc2"], device="cpu")
    for name in ("fc1", "act", "block", "fc2"):
        np.testing.assert_allclose(
            got[name]["activations"], want[name]["activations"], rtol=1e-5, atol=1e-6
        )
    with pytest.raises(
        ValueError, match=r"cannot record 'block.0'.*those are: fc1, act, block, fc2"
    ):
        extract(scripted, x, ["block.0"], device="cpu")


# ------------------------------------------------------------------- zarr


def _labels(n):
    return np.arange(n) % 3, np.arange(100, 100 + n)


def test_a_store_round_trips(tmp_path):
    net, x = _tiny(), torch.randn(23, 784)
    labels, indices = _labels(23)
    layers = ["fc1", "block.0", "fc2"]  # widths 16, 16, 10
    memory = extract(net, x, layers, labels=labels, indices=indices, batch_size=5, device="cpu")
    result = extract_to_zarr(net, x, layers, tmp_path / "a.zarr", run="bp/seed-1",
                             labels=labels, indices=indices, batch_size=5, device="cpu",
                             provenance={"checkpoint": "somewhere"})  # fmt: skip
    assert not result.skipped
    tree = store.open_activations(tmp_path / "a.zarr")
    assert tree.attrs["runs"] == ["bp/seed-1"]
    run = tree["bp/seed-1"]
    assert run.attrs["layers"] == layers
    assert run.attrs["checkpoint"] == "somewhere"
    assert run.attrs["weights_sha256"] == checkpoints.weights_sha256(net)
    assert run["fc1"]["activations"].chunks is not None  # lazy, dask-backed
    for name in layers:
        xr.testing.assert_identical(run[name].to_dataset().compute(), memory[name].to_dataset())


def test_chunks_split_the_stimuli_and_partial_batches_land_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_CHUNK_BYTES", 4 * 16 * 7)  # 7 rows of a 16-unit layer
    net, x = _tiny(), torch.randn(50, 784)
    extract_to_zarr(net, x, ["fc1", "fc2"], tmp_path / "a.zarr", batch_size=6, device="cpu")
    run = store.open_activations(tmp_path / "a.zarr")["model"]
    assert run["fc1"]["activations"].data.chunksize == (7, 16)
    want = extract(net, x, ["fc1", "fc2"], device="cpu")
    for name in ("fc1", "fc2"):
        np.testing.assert_allclose(
            run[name]["activations"], want[name]["activations"], rtol=1e-5, atol=1e-6
        )


class Exploding(TinyNet):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().forward(x)


def test_an_interrupted_extraction_leaves_the_previous_store(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "a.zarr"
    x = torch.randn(40, 784)
    extract_to_zarr(_tiny(), x, ["fc1"], path, run="bp", device="cpu")
    before = store.open_activations(path)["bp"]["fc1"]["activations"].values
    with pytest.raises(KeyboardInterrupt):
        extract_to_zarr(Exploding(after=2), x, ["fc1"], path, run="bp", batch_size=8, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        extract_to_zarr(Exploding(after=2), x, ["fc1"], path, run="dfa", batch_size=8, device="cpu")
    tree = store.open_activations(path)
    assert tree.attrs["runs"] == ["bp"]
    np.testing.assert_array_equal(tree["bp"]["fc1"]["activations"].values, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


_KILLED = """
import sys, time, torch
from repsim.extract import extract_to_zarr
class Slow(torch.nn.Linear):
    def forward(self, x):
        print("batch", flush=True)
        time.sleep(0.2)
        return super().forward(x)
net = torch.nn.Sequential(Slow(4, 3))
extract_to_zarr(net, torch.randn(400, 4), ["0"], sys.argv[1], run="slow", batch_size=1, device="cpu")
"""


def test_a_killed_extraction_leaves_no_run_and_its_debris_is_cleaned(tmp_path):
    path = tmp_path / "a.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    for _ in range(3):
        assert proc.stdout.readline().strip() == "batch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (path / "slow").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".a.zarr.tmp-")]  # debris
    extract_to_zarr(
        nn.Sequential(nn.Linear(4, 3)), torch.randn(5, 4), ["0"], path, run="other", device="cpu"
    )
    assert store.open_activations(path).attrs["runs"] == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.zarr"
    ]  # the dead writer's files are gone


def test_a_rerun_is_skipped_only_when_weights_stimuli_and_layers_match(tmp_path):
    path, x = tmp_path / "a.zarr", torch.randn(12, 784)
    labels, indices = _labels(12)

    def run(net, x=x, layers=("fc1",), labels=labels, **kw):
        return extract_to_zarr(
            net, x, list(layers), path, labels=labels, indices=indices, device="cpu", **kw
        ).skipped

    assert not run(_tiny())
    assert run(_tiny())  # same weights (rebuilt), same stimuli, same layers
    assert not run(_tiny(), force=True)
    assert not run(_tiny(seed=1))  # other weights
    assert not run(_tiny(seed=1), x=x + 1e-3)  # other stimuli
    assert not run(_tiny(seed=1), x=x + 1e-3, labels=labels[::-1].copy())  # other labels
    assert not run(_tiny(seed=1), x=x + 1e-3, labels=labels[::-1].copy(), layers=("fc1", "fc2"))
    assert run(
        _tiny(seed=1), x=x + 1e-3, labels=labels[::-1].copy(), layers=("fc1", "fc2"), batch_size=5
    )
    tree = store.open_activations(path)
    assert tree["model"].attrs["layers"] == ["fc1", "fc2"]


def test_open_activations_on_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a zarr store.*python -m repsim.extract"):
        store.open_activations(tmp_path)


@pytest.mark.parametrize(
    ("run", "match"),
    [("a//b", r"empty, '\.' or '\.\.' part"), ("a/label", r"cannot name a zarr group")],
)
def test_names_that_cannot_be_groups_are_refused(tmp_path, run, match):
    with pytest.raises(ValueError, match=match):
        extract_to_zarr(
            _tiny(), torch.randn(2, 784), ["fc1"], tmp_path / "a.zarr", run=run, device="cpu"
        )


# ------------------------------------------------------------------- command line


def _our_checkpoint(path, seed=0, depth=3, width=8):
    from training.model import MLP

    torch.manual_seed(seed)
    model = MLP(depth=depth, width=width)
    checkpoints.save(path, {
        "name": path.name, "model": {"factory": "training.model:MLP", "kwargs": {"depth": depth, "width": width}},
        "layers": model.layer_names, "dataset": "mnist-5k", "method": {"name": "bp"},
    }, model.state_dict())  # fmt: skip
    return model.eval()


def test_the_command_extracts_every_run_and_skips_up_to_date_ones(tmp_path, capsys):
    models = {
        name: _our_checkpoint(tmp_path / name, seed=i)
        for i, name in enumerate(["bp/seed-0", "bp/seed-1", "dfa"])
    }
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["bp/seed-0", "bp/seed-1", "dfa"]
    assert all("3 layers × 50 stimuli" in line for line in lines)
    tree = store.open_activations(tmp_path / "activations.zarr")
    assert tree.attrs["runs"] == ["bp/seed-0", "bp/seed-1", "dfa"]
    chosen = datasets.select("mnist-5k:test:50")
    acts = tree["bp/seed-1"]["block2"]["activations"]
    assert acts.sizes == {"stimulus": 50, "unit": 8}
    assert acts.label.values.tolist() == chosen.labels.tolist()
    assert acts.index.values.tolist() == chosen.indices.tolist()
    with torch.no_grad():
        want = models["bp/seed-1"].block2(models["bp/seed-1"].block1(chosen.inputs))
    np.testing.assert_allclose(acts.values, want.numpy(), rtol=1e-5, atol=1e-6)
    assert tree["dfa"].attrs["stimuli"] == "mnist-5k:test:50"
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:50"]) == 0
    assert all("up to date" in line for line in capsys.readouterr().out.splitlines())


def test_the_default_stimuli_are_the_papers_400(tmp_path):
    _our_checkpoint(tmp_path / "bp")
    assert main([str(tmp_path / "bp"), "--quiet", "--layers", "block1"]) == 0
    acts = store.open_activations(tmp_path / "bp" / "activations.zarr")["bp"]["block1"][
        "activations"
    ]
    assert acts.index.values.tolist() == datasets.paper_stimuli().indices.tolist()
    assert np.bincount(acts.label.values).tolist() == [40] * 10


def test_the_command_refuses_an_untrusted_factory_unless_told(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoints.save(tmp_path / "ext", {"model": {"factory": "tests.repsim.test_extract:TinyNet", "kwargs": {}},
                                        "layers": ["fc1"]}, TinyNet().state_dict())  # fmt: skip
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:20"]) == 2
    assert "not a model constructor" in capsys.readouterr().err
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:20", "--trust"]) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--stimuli", "mnist-5k:test"], "not <dataset>:<split>:<n|all>"),
    (["--stimuli", "mnist-5k:valid:10"], "unknown split 'valid'"),
    (["--stimuli", "mnist-5k:test:5000"], "cannot choose 5000 items"),
    (["--layers", "block9"], "unknown layer 'block9'"),
])  # fmt: skip
def test_the_command_reports_bad_input(tmp_path, capsys, argv, message):
    _our_checkpoint(tmp_path / "bp")
    assert main([str(tmp_path), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "activations.zarr" / "bp").exists()


def test_an_empty_directory_is_reported(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_external_weights_end_to_end_from_the_command_line(tmp_path, fmt):
    from safetensors.torch import save_file

    net = _tiny(seed=5, hidden=12)
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    out = subprocess.run(
        [sys.executable, "-m", "repsim.extract", str(path), "--model", "tests.repsim.test_extract:TinyNet",
         "--model-kwargs", json.dumps({"hidden": 12}), "--layers", "fc1,block.1,fc2",
         "--stimuli", "mnist-5k:test:30", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("weights: 3 layers × 30 stimuli")
    run = store.open_activations(tmp_path / "activations.zarr")["weights"]
    assert run.attrs["factory"] == "tests.repsim.test_extract:TinyNet"
    assert run.attrs["checkpoint"] == str(path)
    chosen = datasets.select("mnist-5k:test:30")
    net.eval()
    with torch.no_grad():
        bn = net.block[1](net.block[0](net.act(net.fc1(chosen.inputs))))
    np.testing.assert_allclose(
        run["block.1"]["activations"].values, bn.numpy(), rtol=1e-5, atol=1e-5
    )


def test_the_command_starts_without_importing_training():
    code = "import sys, repsim.extract; print('training' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_time_is_reported(tmp_path, capsys):
    """Each run's line ends with its rate and time; how fast extraction is, is measured by
    benchmarks/extract.py, not asserted here (a loaded machine would fail the test)."""
    _our_checkpoint(tmp_path / "bp")
    assert main([str(tmp_path), "--quiet", "--stimuli", "mnist-5k:test:10", "--device", "cpu"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("bp: "))
    rate, seconds = line.rsplit("(", 1)[1].removesuffix(")").split(", ")
    assert rate.endswith(" stimuli/s") and float(rate.split()[0].replace(",", "")) >= 0
    assert seconds.endswith(" s") and float(seconds.split()[0]) >= 0
