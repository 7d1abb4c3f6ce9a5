"""The network every learning rule trains: a deep MLP of Linear → BatchNorm → activation
blocks and a Linear readout. Imports only torch, so that a checkpoint's factory
(``training.model:MLP``) rebuilds it anywhere.

Hidden blocks are named ``block1`` … ``block<depth>`` (1-based, as the paper counts
layers: "a synthetic gradient after layer 11 of 20" sits after ``block11``); the readout is
``out``. The output of module ``block<k>`` (after its activation) is hidden layer ``h_k``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """``depth`` blocks of ``width`` units, then a linear readout to ``n_classes`` logits.

    Parameters
    ----------
    depth, width
        Number of hidden blocks and units per block (the paper's net: 20 × 512).
    activation
        ``"relu"`` or ``"sigmoid"``.
    batchnorm
        BatchNorm after each hidden Linear (the Linear then has no bias, which BatchNorm's
        shift would make redundant).
    in_features, n_classes
        Input and output sizes (784 and 10 for the MNIST family).

    Examples
    --------
    >>> net = MLP(depth=3, width=32)
    >>> net(torch.zeros(5, 784)).shape
    torch.Size([5, 10])
    >>> net.layer_names
    ['block1', 'block2', 'block3']
    """

    def __init__(
        self,
        depth: int = 20,
        width: int = 512,
        activation: str = "relu",
        batchnorm: bool = True,
        in_features: int = 784,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        sizes = {"depth": depth, "width": width, "in_features": in_features, "n_classes": n_classes}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        self.depth = depth
        for k in range(1, depth + 1):
            fan_in = in_features if k == 1 else width
            parts = OrderedDict(linear=nn.Linear(fan_in, width, bias=not batchnorm))
            if batchnorm:
                parts["norm"] = nn.BatchNorm1d(width)
            parts["act"] = ACTIVATIONS[activation]()
            self.add_module(f"block{k}", nn.Sequential(parts))
        self.out = nn.Linear(width, n_classes)

    @property
    def layer_names(self) -> list[str]:
        """Module names of the hidden blocks, input to output."""
        return [f"block{k}" for k in range(1, self.depth + 1)]

    @property
    def blocks(self) -> list[nn.Sequential]:
        """The hidden blocks, input to output."""
        return [getattr(self, name) for name in self.layer_names]

    @property
    def linears(self) -> list[nn.Linear]:
        """Every Linear map, the readout last."""
        return [block.linear for block in self.blocks] + [self.out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.out(x)
