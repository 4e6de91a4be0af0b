"""One model-state context manager (issue 12.6): eval mode and grad flags for a while, then every module's
and every parameter's own flag back -- also for a model whose submodules were in mixed modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uncert_cli.analysis.pruning import evaluate_model
from uncert_cli.curvature import compute_curvature
from uncert_cli.forward_check import check_model_runs
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.model_state import eval_mode, is_dropout, model_state
from uncert_cli.posterior import LaplacePosterior


def mixed_model() -> nn.Module:
    """Training model with a frozen BatchNorm kept in eval mode and a frozen first layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    model[1].eval()
    model[0].weight.requires_grad_(False)
    return model


def flags(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_modes_inside_and_restored_exactly():
    model = mixed_model()
    before = flags(model)
    with model_state(model, requires_grad=lambda p: p.dim() == 1):
        assert not any(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == [p.dim() == 1 for p in model.parameters()]
    assert flags(model) == before
    with eval_mode(model, dropout_train=True):
        assert [m.training for m in model.modules()] == [is_dropout(m) for m in model.modules()]
    assert flags(model) == before


def test_restored_when_the_block_raises():
    model = mixed_model()
    before = flags(model)
    with pytest.raises(ValueError):
        with model_state(model, requires_grad=lambda p: False):
            raise ValueError("inside")
    assert flags(model) == before


def test_commands_leave_mixed_modes_as_they_found_them():
    """prune --evaluate restored every submodule to the root's flag (the BatchNorm came back training)."""
    model = mixed_model()
    before = flags(model)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    params = {n: p.detach() for n, p in model.named_parameters()}
    evaluate_model(model, params, lambda: [(x, y)], "classification")
    assert flags(model) == before
    check_model_runs(model, dataset_from_arrays("t", x.numpy(), y.numpy()))
    assert flags(model) == before
    curvature = compute_curvature(model, [(x, y)], method="kfac")
    assert flags(model) == before
    post = LaplacePosterior(curvature, model)
    for kind in ("map", "glm", "probit", "mc", "dropout"):
        post.predict(x[:4], kind, samples=3)
        assert flags(model) == before, kind


class _Counting(nn.Module):
    """Updates one buffer in place and rebinds another on every call, in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("last", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last = x.mean(0).detach()
        return self.fc(x)


def test_buffers_a_forward_changes_are_put_back_as_the_same_tensors():
    model = _Counting()
    calls, last = model.calls, model.last
    with model_state(model), torch.no_grad():
        model(torch.ones(2, 4))
        model(torch.ones(2, 4))
        assert model.calls.item() == 2 and model.last is not last  # inside the block the forward runs as written
    assert model.calls is calls and model.calls.item() == 0
    assert model.last is last and torch.equal(model.last, torch.zeros(4))
