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

__all__ = [
    "Block",
    "Curvature",
    "DiagonalBlock",
    "FisherType",
    "KroneckerBlock",
    "KroneckerEigen",
    "Method",
    "Task",
]
