"""Curvature engine: GGN/Fisher diagonals and Kronecker factors of a trained network."""

from uncert_cli.curvature.blocks import (
    Block,
    Curvature,
    DiagonalBlock,
    FisherType,
    KroneckerBlock,
    KroneckerEigen,
    Method,
    Task,
)
from uncert_cli.curvature.engine import compute_curvature, estimate_memory
from uncert_cli.curvature.loss_vectors import loss_backward_vectors
from uncert_cli.curvature.subset import supported_structure

__all__ = [
    "Block",
    "Curvature",
    "DiagonalBlock",
    "FisherType",
    "KroneckerBlock",
    "KroneckerEigen",
    "Method",
    "Task",
    "compute_curvature",
    "estimate_memory",
    "loss_backward_vectors",
    "supported_structure",
]
