"""Exact diagonals (method="diag", and diagonal blocks under "kfac") against the explicit GGN."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal
from tests.reference.models import Conv1dNet, NormNet, SequenceNet, SharedNet, cnn, mlp, targets
from uncert_cli.curvature import DiagonalBlock, compute_curvature

TASKS = ["classification", "regression"]


def _check_diagonals(model: nn.Module, x: Tensor, y: Tensor, task: str, method: str = "diag") -> int:
    ggn = explicit_ggn(model, x, task)
    curv = compute_curvature(model, [(x[:3], y[:3]), (x[3:], y[3:])], method=method, task=task)
    assert curv.n_data == x.shape[0]
    checked = 0
    for block in curv.blocks:
        if not isinstance(block, DiagonalBlock):
            continue
        for name, diag in zip(block.param_names, block.diagonal):
            torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-9, atol=1e-12)
            checked += 1
    covered = {n for b in curv.blocks for n in b.param_names}
    assert covered == {n for n, _ in model.named_parameters()}
    return checked


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("bias", [True, False])
def test_mlp(task: str, bias: bool) -> None:
    model = mlp(bias)
    x = torch.randn(7, 4, dtype=torch.float64)
    assert _check_diagonals(model, x, targets(task, 7, 3), task) == (4 if bias else 2)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("bias", [True, False])
def test_cnn(task: str, bias: bool) -> None:
    model = cnn(bias)
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    assert _check_diagonals(model, x, targets(task, 5, 3), task) == (8 if bias else 4)


def test_conv1d_same_padding() -> None:
    model = Conv1dNet().double()
    x = torch.randn(5, 2, 5, dtype=torch.float64)
    _check_diagonals(model, x, targets("classification", 5, 2), "classification")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_linear(task: str, bias: bool) -> None:
    model = SequenceNet(bias).double()
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    _check_diagonals(model, x, targets(task, 5, 2), task)


@pytest.mark.parametrize("task", TASKS)
def test_shared_layer_called_twice(task: str) -> None:
    model = SharedNet().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    _check_diagonals(model, x, targets(task, 6, 3), task)


@pytest.mark.parametrize("method", ["diag", "kfac"])
@pytest.mark.parametrize("task", TASKS)
def test_norms_and_embedding(task: str, method: str) -> None:
    model = NormNet().double()
    idx = torch.randint(0, 7, (6, 2))
    checked = _check_diagonals(model, idx, targets(task, 6, 3), task, method=method)
    # emb (1) + ln (2) + bn (2) are always diagonal; fc and head too under "diag".
    assert checked == (9 if method == "diag" else 5)


def test_diagonal_is_per_parameter_shape() -> None:
    model = cnn()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    curv = compute_curvature(model, [(x, targets("classification", 3, 3))], method="diag")
    for block in curv.blocks:
        assert isinstance(block, DiagonalBlock)
        assert tuple(tuple(d.shape) for d in block.diagonal) == block.param_shapes
        assert all((d >= 0).all() for d in block.diagonal)
