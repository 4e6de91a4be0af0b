"""The dense posterior of the tests: every block type's curvature, precision and covariance as matrices.

``block_matrix`` gives a block's curvature in the block's packed order (flat concatenation of its
parameters for dense, low-rank and diagonal blocks; ``W_aug`` row-major for Kronecker-type blocks), or
with ``waug=True`` a diagonal block in ``W_aug`` order too. The precision of a block under prior
precision ``τ`` and data size ``N`` is ``N·C + τI`` (the eigen form) or, for a Kronecker block,
``(√N·G + √τ·I) ⊗ (√N·A + √τ·I)`` (the factor form); the covariance is its explicit inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tests.reference.indices import param_index, restrict, waug_index
from uncert_cli.curvature.blocks import (
    Curvature,
    DenseBlock,
    DiagonalBlock,
    EKFACBlock,
    KronDiagBlock,
    KroneckerBlock,
    LowRankBlock,
)

KRONECKER_TYPES = (KroneckerBlock, EKFACBlock, KronDiagBlock)


def block_matrix(block, waug: bool = False) -> Tensor:
    """``(P, P)`` float64 curvature of one block (order: module docstring)."""
    if isinstance(block, KroneckerBlock):
        return torch.kron(block.output_factor, block.input_factor).double()
    if isinstance(block, DiagonalBlock):
        if waug:
            weight, bias = block.diagonal
            return torch.diag(torch.cat([weight, bias.unsqueeze(1)], 1).reshape(-1)).double()
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


def block_index(model: nn.Module, names: Sequence[str], block) -> Tensor:
    """Positions of the block's packed entries in the flat vector of ``names``."""
    if isinstance(block, KRONECKER_TYPES):
        return waug_index(model, block.module, names)
    return param_index(model, block.param_names, names)


def curvature_matrix(curvature: Curvature, model: nn.Module, names: Sequence[str]) -> Tensor:
    """``(P, P)``: every block placed at its parameters in the flat vector of ``names``, zeros elsewhere."""
    P = sum(dict(model.named_parameters())[n].numel() for n in names)
    out = torch.zeros(P, P, dtype=torch.float64)
    for block in curvature.blocks:
        idx = block_index(model, names, block)
        out[idx.unsqueeze(1), idx.unsqueeze(0)] = block_matrix(block)
    return out


def dense_precision(block, n_data: float, tau: float, mode: str = "eigen", waug: bool = False) -> Tensor:
    """``(P, P)`` precision of one block under ``(N, τ)`` in the ``eigen`` or (Kronecker) ``factor`` form."""
    if mode == "factor" and isinstance(block, KroneckerBlock):
        A, G = block.input_factor.double(), block.output_factor.double()
        eye_a, eye_g = torch.eye(A.shape[0], dtype=A.dtype), torch.eye(G.shape[0], dtype=G.dtype)
        return torch.kron(math.sqrt(n_data) * G + math.sqrt(tau) * eye_g, math.sqrt(n_data) * A + math.sqrt(tau) * eye_a)
    C = block_matrix(block, waug=waug)
    return n_data * C + tau * torch.eye(C.shape[0], dtype=C.dtype)


def dense_covariance(curvature: Curvature, n_data: float, taus: dict[str, float], mode: str) -> Tensor:
    """``(P, P)`` block-diagonal covariance over the blocks in turn, each in ``W_aug`` order."""
    return torch.block_diag(*[torch.linalg.inv(dense_precision(b, n_data, taus[b.module], mode, waug=True))
                              for b in curvature.blocks])


def restrict_to_block(matrix: Tensor, model: nn.Module, names: Sequence[str], block) -> Tensor:
    """The sub-matrix of a ``(P, P)`` matrix over ``names`` at one block's packed entries."""
    return restrict(matrix, block_index(model, names, block))
