"""describe_layers: which modules own parameters and which curvature structure they get."""

from __future__ import annotations

import torchvision
from torch import nn

from uncert_cli.checkpoint import describe_layers
from uncert_cli.models import MLP, LeNet


def total(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mlp_layers() -> None:
    model = MLP(784, [100, 50], 10)
    layers = describe_layers(model)
    assert [(l.name, l.type, l.structure) for l in layers] == [
        ("fc1", "Linear", "kronecker"),
        ("fc2", "Linear", "kronecker"),
        ("fc3", "Linear", "kronecker"),
    ]
    assert [l.params for l in layers] == [784 * 100 + 100, 100 * 50 + 50, 50 * 10 + 10]
    assert sum(l.params for l in layers) == total(model)


def test_lenet_layers() -> None:
    model = LeNet()
    layers = describe_layers(model)
    assert [l.name for l in layers] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert {l.structure for l in layers} == {"kronecker"}
    assert layers[0].type == "Conv2d" and layers[0].params == 6 * 1 * 25 + 6
    assert sum(l.params for l in layers) == total(model)


def test_resnet18_layers() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    layers = describe_layers(model)
    assert sum(l.params for l in layers) == total(model)
    by_type = {l.type: l.structure for l in layers}
    assert by_type == {"Conv2d": "kronecker", "BatchNorm2d": "diagonal", "Linear": "kronecker"}
    names = [l.name for l in layers]
    assert names[:2] == ["conv1", "bn1"] and names[-1] == "fc"
    assert "layer1.0.conv1" in names and "layer4.1.bn2" in names
    # Every name is addressable in the model.
    assert all(model.get_submodule(name) is not None for name in names)


def test_other_parameter_holders_are_diagonal_and_tied_weights_counted_once() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight  # tied
            self.scale = nn.Parameter(nn.init.ones_(self.embed.weight.new_empty(1)))

    model = Model()
    layers = describe_layers(model)
    assert [(l.name, l.type, l.structure, l.params, l.tied_block) for l in layers] == [
        ("", "Model", "diagonal", 1, None),
        ("embed", "Embedding", "diagonal", 40, "embed+out"),
        ("norm", "LayerNorm", "diagonal", 8, None),
    ]
    assert sum(l.params for l in layers) == total(model)
