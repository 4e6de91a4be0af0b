"""The architectures uncert ships: names, shapes, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncert_cli.models import MLP, LeNet


def test_mlp_names_and_shapes() -> None:
    model = MLP(784, [32, 16], 10, dropout=0.5, activation="tanh")
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linear == ["fc1", "fc2", "fc3"]
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Dropout)] == ["drop1", "drop2"]
    assert isinstance(model.act1, nn.Tanh)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)  # flattens images itself


def test_mlp_without_hidden_layers_is_linear() -> None:
    model = MLP(4, [], 2)
    assert [n for n, _ in model.named_parameters()] == ["fc1.weight", "fc1.bias"]


def test_mlp_dropout_only_in_train_mode() -> None:
    model = MLP(6, (16,), 2, dropout=0.5).eval()
    x = torch.randn(3, 6)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("bad", [{"activation": "swishy"}, {"dropout": 1.0}, {"hidden": [0]}])
def test_mlp_rejects_bad_arguments(bad: dict) -> None:
    kwargs = {"in_features": 4, "hidden": [3], "out_features": 2, **bad}
    with pytest.raises(ValueError):
        MLP(**kwargs)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_lenet_handles_28_and_32(channels: int, size: int) -> None:
    model = LeNet(in_channels=channels, num_classes=7)
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert names == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert model.fc1.in_features == 16 * 5 * 5  # same fc shapes whatever the input size


@pytest.mark.parametrize("make", [lambda: MLP(10, [5], 2), lambda: LeNet()])
def test_models_are_deterministic_under_seed(make) -> None:
    torch.manual_seed(123)
    first = make().state_dict()
    torch.manual_seed(123)
    second = make().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
