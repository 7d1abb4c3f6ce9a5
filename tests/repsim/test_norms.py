"""Normalised weight norms against an independent computation; finding each layer's
weight in any model; every error."""

import numpy as np
import pytest
import torch
from torch import nn

from repsim.norms import weight_keys, weight_norms
from training.model import MLP


class Blocks(nn.Module):
    """Defined here, not in the project: BatchNorm before the Linear in one block, so the
    rule must skip a 1-D weight that comes first in named_modules order."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 5)
        self.block = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 4, bias=False), nn.ReLU())
        self.deep = nn.Sequential(nn.Sequential(nn.Identity(), nn.Linear(4, 3)), nn.Tanh())
        self.act = nn.ReLU()
        self.norm = nn.LayerNorm(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.norm(self.act(self.deep(self.block(self.stem(x))))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_norms_match_an_independent_computation(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a": (7, 3), "b": (5, 7), "conv": (4, 2, 3, 3), "c": (1, 5)}
    sd = {f"{k}.weight": torch.randn(*s, generator=gen) * (i + 1) for i, (k, s) in
          enumerate(shapes.items())}  # fmt: skip
    sd["a.bias"] = torch.randn(7, generator=gen)  # not named: not counted
    norms = weight_norms(sd, {k: f"{k}.weight" for k in shapes})
    sq = {
        k: float(torch.linalg.matrix_norm(sd[f"{k}.weight"].double().flatten(1), "fro") ** 2)
        for k in shapes
    }
    expected = np.array([sq[k] / sum(sq.values()) for k in shapes])
    assert norms.name == "weight_norm" and norms.dims == ("layer",)
    assert norms.dtype == np.float64 and list(norms["layer"].values) == list(shapes)
    np.testing.assert_allclose(norms.values, expected, rtol=1e-12)
    assert norms.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert norms.attrs["keys"] == [f"{k}.weight" for k in shapes]


def test_weight_norms_of_half_precision_weights_are_computed_in_float64():
    sd = {"a": torch.full((300, 300), 300.0, dtype=torch.float16), "b": torch.ones(2, 2)}
    norms = weight_norms(sd, {"a": "a", "b": "b"})  # 300² · 300² overflows float16
    np.testing.assert_allclose(norms.values, [8.1e9 / (8.1e9 + 4), 4 / (8.1e9 + 4)], rtol=1e-12)


def test_weight_norms_errors():
    sd = {"block1.linear.weight": torch.ones(2, 2), "block2.linear.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"has no 'block1\.linaer\.weight'.*did you mean 'block1\.linear\.weight'"):  # fmt: skip
        weight_norms(sd, {"block1": "block1.linaer.weight"})
    with pytest.raises(ValueError, match=r"every weight is zero"):
        weight_norms(sd, {"block2": "block2.linear.weight"})
    with pytest.raises(ValueError, match=r"holds NaN or inf"):
        weight_norms({"w": torch.tensor([[1.0, float("nan")]])}, {"x": "w"})
    with pytest.raises(ValueError, match=r"non-empty mapping"):
        weight_norms(sd, {})


def test_weight_keys_finds_own_and_nested_weights_and_skips_1d_ones():
    net = Blocks()
    keys = weight_keys(net, ["stem", "block", "deep", "head"])
    assert keys == {
        "stem": "stem.weight",
        "block": "block.1.weight",  # block.0 is a BatchNorm: its weight is 1-D
        "deep": "deep.0.1.weight",
        "head": "head.weight",
    }
    assert all(k in net.state_dict() for k in keys.values())
    norms = weight_norms(net.state_dict(), keys)
    assert list(norms["layer"].values) == ["stem", "block", "deep", "head"]
    assert norms.sum().item() == pytest.approx(1.0)


def test_weight_keys_overrides_win():
    keys = weight_keys(Blocks(), ["block", "norm"], overrides={"norm": "norm.weight"})
    assert keys == {"block": "block.1.weight", "norm": "norm.weight"}


def test_weight_keys_of_the_project_mlp():
    net = MLP(depth=3, width=8)
    keys = weight_keys(net, net.layer_names)
    assert keys == {f"block{k}": f"block{k}.linear.weight" for k in (1, 2, 3)}
    norms = weight_norms(net.state_dict(), keys)
    sq = [float((lin.weight.detach().double() ** 2).sum()) for lin in net.linears[:-1]]
    np.testing.assert_allclose(norms.values, np.array(sq) / sum(sq), rtol=1e-12)


def test_weight_keys_errors():
    net = Blocks()
    with pytest.raises(ValueError, match=r"no weight matrix .* 'act' \(ReLU\), 'norm' \(LayerNorm\).*overrides="):  # fmt: skip
        weight_keys(net, ["stem", "act", "norm"])
    with pytest.raises(
        ValueError, match=r"unknown layer 'blok' \(did you mean 'block'.*layer_names"
    ):
        weight_keys(net, ["blok"])
    with pytest.raises(ValueError, match=r"overrides name layers that are not in layers: 'head'"):
        weight_keys(net, ["stem"], overrides={"head": "head.weight"})
    with pytest.raises(ValueError, match=r"override for layer 'stem'.*no 'stem\.wieght'.*'stem\.weight'"):  # fmt: skip
        weight_keys(net, ["stem"], overrides={"stem": "stem.wieght"})
    with pytest.raises(ValueError, match=r"non-empty list of module names"):
        weight_keys(net, "stem")


# ------------------------------------------------------------------- command line


class External(nn.Module):
    """Blocks as another codebase might write them: BatchNorm before the Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.BatchNorm1d(784), nn.Linear(784, 6))
        self.second = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.second(self.first(x)))


def test_the_command_on_external_weights_finds_each_layers_weight(tmp_path, capsys):
    from repsim import store
    from repsim.norms import main

    torch.manual_seed(0)
    net = External()
    torch.save(net.state_dict(), tmp_path / "ext.pt")
    argv = [
        str(tmp_path / "ext.pt"),
        "--model",
        "tests.repsim.test_norms:External",
        "--layers",
        "first,second",
    ]
    assert main(argv) == 0
    norms = store.open_results(tmp_path / "results.zarr")["weight_norm"]
    a = float(torch.linalg.matrix_norm(net.first[1].weight.detach().double()) ** 2)
    b = float(torch.linalg.matrix_norm(net.second[1].weight.detach().double()) ** 2)
    np.testing.assert_allclose(norms.sel(run="ext").values, [a / (a + b), b / (a + b)], rtol=1e-12)
    argv += ["--weights", "second=head.weight"]
    assert main(argv) == 0
    c = float(torch.linalg.matrix_norm(net.head.weight.detach().double()) ** 2)
    norms = store.open_results(tmp_path / "results.zarr")["weight_norm"]
    np.testing.assert_allclose(norms.sel(run="ext").values, [a / (a + c), c / (a + c)], rtol=1e-12)
    assert (tmp_path / "figures" / "weight_norm.png").read_bytes().startswith(b"\x89PNG")
    assert main([*argv[:-2], "--weights", "second"]) == 2
    assert "layer=state_dict_key pairs" in capsys.readouterr().err
