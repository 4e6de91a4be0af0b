"""checkpoint.stored: a state dict laid out as a module tree without code behaves like the real module
where the posterior looks (names, shapes, parameters vs buffers, fingerprint) and refuses to run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncert_cli.checkpoint import weights_fingerprint
from uncert_cli.checkpoint.stored import (
    guess_kinds,
    guess_parameter_names,
    module_from_weights,
    module_kind,
    module_kinds,
)
from uncert_cli.errors import UserError


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
        self.head = nn.Linear(3, 2)
        self.tied = nn.Linear(3, 2)
        self.tied.weight = self.head.weight  # tied weights: one parameter, two state-dict names
        self.register_buffer("mask", torch.ones(2))  # a user's buffer is not a parameter
        self.scale = nn.Parameter(torch.tensor(2.0))  # a 0-d parameter on the root


def _stored(net: nn.Module) -> nn.Module:
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return module_from_weights(state, [n for n, _ in net.named_parameters()], module_kinds(net))


def test_the_tree_matches_the_real_module_where_the_posterior_looks():
    torch.manual_seed(0)
    net = _Net()
    stored = _stored(net)
    assert weights_fingerprint(stored) == weights_fingerprint(net)
    assert [(n, p.shape) for n, p in stored.named_parameters()] == [(n, p.shape) for n, p in net.named_parameters()]
    assert sum(p.numel() for p in stored.parameters()) == sum(p.numel() for p in net.parameters())
    assert {n for n, _ in stored.named_buffers()} == {n for n, _ in net.named_buffers()} | {"tied.weight"}
    assert module_kinds(stored) == module_kinds(net) == {
        "features.0": "conv", "features.1": "batchnorm2d", "head": "linear", "tied": "linear", "": "_net"}
    assert module_kind(stored.get_submodule("features.1")) == "batchnorm2d"
    # the state dict round-trips (prune -o masks it and saves it)
    stored.load_state_dict({k: torch.zeros_like(v) for k, v in stored.state_dict().items()})
    assert float(stored.get_submodule("head").weight.detach().abs().sum()) == 0.0


def test_running_the_tree_names_arch():
    stored = _stored(_Net())
    with pytest.raises(UserError, match="name its class with arch path/to/file.py:Class"):
        stored(torch.zeros(1, 1, 5, 5))


@pytest.mark.parametrize("name", ["forward.weight", "a..b", "training", "head.weight.x"])
def test_names_that_cannot_be_a_module_tree_are_refused(name):
    state = {"head.weight": torch.zeros(2, 2), name: torch.zeros(1)}
    with pytest.raises(UserError, match="cannot be laid out"):
        module_from_weights(state, list(state), {})


def test_guesses_for_files_without_recorded_names():
    state = {"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2), "bn.weight": torch.zeros(2),
             "bn.running_mean": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(0), "pe": torch.zeros(4)}
    assert guess_parameter_names(state, ["bn.weight"], complete=True) == ["bn.weight"]
    assert guess_parameter_names(state, ["bn.weight"], complete=False) == ["bn.weight", "fc.weight", "fc.bias", "pe"]
    assert guess_kinds({"fc": ((2, 3), True), "conv": ((4, 1, 3, 3), True), "bn": ((2,), False)}) == {
        "fc": "linear", "conv": "conv"}
