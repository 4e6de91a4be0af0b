"""Dense matrices of every block type (the test side of the structures), in two layouts.

``block_matrix`` gives a block's curvature in the block's own packed order (flat concatenation for
dense/low-rank/diagonal blocks, ``W_aug`` row-major for Kronecker-type blocks); ``curvature_matrix``
places every block into the ``P x P`` matrix over the model's parameters in ``named_parameters`` order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tests.structures.reference import waug_index
from uncert_cli.curvature.blocks import (
    Curvature,
    DenseBlock,
    DiagonalBlock,
    EKFACBlock,
    KronDiagBlock,
    KroneckerBlock,
    LowRankBlock,
)


def block_matrix(block) -> Tensor:
    if isinstance(block, KroneckerBlock):
        return torch.kron(block.output_factor, block.input_factor).double()
    if isinstance(block, DiagonalBlock):
        return torch.diag(torch.cat([d.reshape(-1) for d in block.diagonal])).double()
    if isinstance(block, DenseBlock):
        return block.matrix.double()
    if isinstance(block, LowRankBlock):
        V = block.eigenvectors.double()
        return V @ torch.diag(block.eigenvalues.double()) @ V.T + torch.diag(block.diagonal.double())
    if isinstance(block, EKFACBlock):
        U = torch.kron(block.eigen.output_eigenvectors, block.eigen.input_eigenvectors).double()
        return U @ torch.diag(block.eigenvalues.reshape(-1).double()) @ U.T
    if isinstance(block, KronDiagBlock):
        lam, V = block.lowrank_part()
        return V.double() @ torch.diag(lam.double()) @ V.double().T + torch.diag(block.diagonal.reshape(-1).double())
    raise TypeError(type(block))


def block_index(model: nn.Module, names: list[str], block) -> Tensor:
    """Positions of the block's packed entries among ``names`` (flat concatenation)."""
    if isinstance(block, (KroneckerBlock, EKFACBlock, KronDiagBlock)):
        return waug_index(model, names, block.module)
    params = dict(model.named_parameters())
    offset, pos = 0, {}
    for n in names:
        pos[n] = offset
        offset += params[n].numel()
    return torch.cat([pos[n] + torch.arange(params[n].numel()) for n in block.param_names])


def curvature_matrix(curvature: Curvature, model: nn.Module, names: list[str]) -> Tensor:
    params = dict(model.named_parameters())
    P = sum(params[n].numel() for n in names)
    out = torch.zeros(P, P, dtype=torch.float64)
    for block in curvature.blocks:
        idx = block_index(model, names, block)
        out[idx.unsqueeze(1), idx.unsqueeze(0)] = block_matrix(block)
    return out
