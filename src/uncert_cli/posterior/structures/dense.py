"""The exact curvature of a joint block (``--method full``): ``U diag(λ) Uᵀ``, decomposed once.

The precision ``n_eff · U diag(λ) Uᵀ + τ I`` has eigenvalues ``n_eff · λ + τ`` in the same basis, so the
block is handled like a diagonal block rotated by ``U`` (:class:`~.base.Spectral`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.posterior.structures.base import Spectral, Structure, cast, float64


@dataclass(frozen=True)
class DenseStructure(Spectral):
    """``eigenvalues`` (P,) (clamped at 0) and ``eigenvectors`` (P, P) of the curvature."""

    tag = "dense"

    eigenvalues: Tensor
    eigenvectors: Tensor

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        total = sum(s.numel() for s in shapes)
        if tuple(block.matrix.shape) != (total, total):
            raise UserError(f"dense curvature of '{block.module}' is not {total}x{total}; recompute it")
        lam, u = block.eigen()
        return cls(block.module, tuple(block.param_names), shapes, cast(lam, ref).clamp_min(0), cast(u, ref))

    @property
    def spectrum(self) -> Tensor:
        return self.eigenvalues

    @property
    def basis(self) -> Tensor:
        return self.eigenvectors

    def curvature_diagonal(self) -> Tensor:
        return self.eigenvectors.square() @ self.eigenvalues

    def to_float64(self) -> Structure:
        return replace(self, eigenvalues=float64(self.eigenvalues), eigenvectors=float64(self.eigenvectors))
