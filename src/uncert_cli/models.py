"""Architectures that ship with uncert.

They exist so that examples, tests and users without their own model code have something to
train and to analyse.  Layer names are part of the interface: reports print them and
checkpoints store them, so they are chosen to be readable (``fc1``, ``conv2``) and must not
change between versions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "LeNet", "ACTIVATIONS"]

#: Activation names accepted by :class:`MLP` (lower case).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class MLP(nn.Module):
    """Fully connected network: flatten, then ``fc1 -> act1 [-> drop1] -> fc2 -> ... -> fcN``.

    Args:
        in_features: size of one flattened input example (784 for 1x28x28 images).
        hidden: widths of the hidden layers; an empty sequence gives a linear model.
        out_features: number of outputs (classes, or regression targets).
        dropout: dropout probability after each hidden activation; with 0 no dropout
            module is created (dropout has no parameters, so checkpoints are the same either way).
        activation: name of the hidden activation, see :data:`ACTIVATIONS`.

    The submodules are direct attributes named ``flatten, fc1, act1, drop1, fc2, ...`` so that
    parameter names are ``fc1.weight`` etc. rather than ``net.0.weight``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] | int,
        out_features: int,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
        for value, what in [(in_features, "in_features"), (out_features, "out_features")]:
            if int(value) < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        if any(w < 1 for w in widths):
            raise ValueError(f"hidden widths must be positive integers, got {list(widths)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        _activation(activation)  # validate the name before building anything

        self.in_features = int(in_features)
        self.hidden = tuple(widths)
        self.out_features = int(out_features)
        self.flatten = nn.Flatten()
        sizes = [self.in_features, *widths]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            self.add_module(f"fc{i}", nn.Linear(fan_in, fan_out))
            self.add_module(f"act{i}", _activation(activation))
            if dropout > 0:
                self.add_module(f"drop{i}", nn.Dropout(float(dropout)))
        self.add_module(f"fc{len(sizes)}", nn.Linear(sizes[-1], self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Children are registered in forward order, so the network is their composition.
        for layer in self.children():
            x = layer(x)
        return x


class LeNet(nn.Module):
    """LeNet-5 style convolutional network for small images (MNIST, CIFAR-10).

    ``conv1(6, 5x5, pad 2) - relu - maxpool - conv2(16, 5x5) - relu - maxpool - fc1(120) - relu
    - fc2(84) - relu - fc3(num_classes)``.

    The padding makes 28x28 inputs reach the classic 16x5x5 feature map.  Larger inputs
    (32x32 gives 16x6x6) are brought to 5x5 by an adaptive average pool, so one architecture
    (and one set of fc shapes) serves both; for 28x28 that pool is the identity.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(num_classes) < 1:
            raise ValueError(
                f"in_channels and num_classes must be positive, got {in_channels!r}, {num_classes!r}"
            )
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.conv1 = nn.Conv2d(self.in_channels, 6, kernel_size=5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.resize = nn.AdaptiveAvgPool2d((5, 5))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(84, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x
