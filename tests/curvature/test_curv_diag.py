"""Exact diagonals (method="diag", and diagonal blocks under "kfac") against the explicit GGN."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.reference.cases import Case
from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal
from tests.reference.models import NormNet, cnn, targets
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


def _check_case(c: Case) -> int:
    """``_check_diagonals`` on a row of the declared table (``tests/reference/cases.py``)."""
    return _check_diagonals(c.model, c.x, c.y, c.task)


@pytest.mark.parametrize(("ref_case", "blocks"), [("mlp-cls", 4), ("mlp-reg", 4), ("mlp-cls-nobias", 2),
                                                  ("mlp-reg-nobias", 2)], indirect=["ref_case"])
def test_mlp(ref_case, blocks: int) -> None:
    assert _check_case(ref_case) == blocks


@pytest.mark.parametrize(("ref_case", "blocks"), [("cnn-cls", 8), ("cnn-reg", 8), ("cnn-cls-nobias", 4),
                                                  ("cnn-reg-nobias", 4)], indirect=["ref_case"])
def test_cnn(ref_case, blocks: int) -> None:
    assert _check_case(ref_case) == blocks


@pytest.mark.parametrize("ref_case", ["conv1d"], indirect=True)
def test_conv1d_same_padding(ref_case) -> None:
    _check_case(ref_case)


@pytest.mark.parametrize("ref_case", ["sequence", "sequence-reg", "sequence-nobias", "sequence-reg-nobias"],
                         indirect=True)
def test_sequence_linear(ref_case) -> None:
    _check_case(ref_case)


@pytest.mark.parametrize("ref_case", ["shared", "shared-reg"], indirect=True)
def test_shared_layer_called_twice(ref_case) -> None:
    _check_case(ref_case)


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
