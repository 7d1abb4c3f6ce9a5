"""The MLP: shapes, stable module names, and its independent reference."""

import pytest
import torch
from torch import nn

from training.model import MLP


def test_layout_and_names():
    net = MLP(depth=3, width=32)
    assert net.layer_names == ["block1", "block2", "block3"]
    names = {name for name, _ in net.named_modules()}
    assert {"block1.linear", "block1.norm", "block1.act", "block3.act", "out"} <= names
    assert net.block1.linear.in_features == 784
    assert net.block1.linear.bias is None  # BatchNorm's shift makes it redundant
    assert net(torch.zeros(4, 784)).shape == (4, 10)


def test_forward_matches_a_manual_computation():
    torch.manual_seed(0)
    net = MLP(depth=2, width=8, activation="sigmoid", batchnorm=False).double().eval()
    x = torch.rand(5, 784, dtype=torch.float64)
    h = x
    for lin in net.linears[:-1]:
        h = torch.sigmoid(h @ lin.weight.T + lin.bias)
    want = h @ net.out.weight.T + net.out.bias
    torch.testing.assert_close(net(x), want)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"depth": 2.5}, "depth must be a positive integer"),
        ({"activation": "tanh"}, "unknown activation 'tanh': expected one of relu, sigmoid"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)
