"""A diagonal block (``--method diag``, and every non-Linear/Conv module under the Kronecker methods).

Curvature ``diag(d)``; precision eigenvalues ``n_eff · d + τ`` in the identity basis (:class:`~.base.Spectral`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.posterior.structures.base import Spectral, Structure, float64


@dataclass(frozen=True)
class DiagonalStructure(Spectral):
    """``diagonal`` (P,): the flat concatenation of the per-parameter diagonals (clamped at 0)."""

    tag = "diagonal"
    factored_outputs = True

    diagonal: Tensor
    # The block's own per-parameter diagonals as stored (not clamped, not cast): pruning's OBD scores
    # read the curvature diagonal from them, as it did before the structures had classes.
    stored: tuple[Tensor, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        if len(block.diagonal) != len(block.param_names) or any(
            tuple(d.shape) != tuple(s) for d, s in zip(block.diagonal, shapes)
        ):
            raise UserError(
                f"diagonal curvature of '{block.module}' does not match its parameter shapes; recompute it"
            )
        diag = torch.cat([d.detach().reshape(-1) for d in block.diagonal]).to(device=ref.device, dtype=ref.dtype)
        return cls(block.module, tuple(block.param_names), shapes, diag.clamp_min(0), tuple(block.diagonal))

    @property
    def spectrum(self) -> Tensor:
        return self.diagonal

    def curvature_diagonal(self) -> Tensor:
        """The stored diagonal in float64 (unclamped), or the clamped one when built without it."""
        if self.stored:
            return torch.cat([d.double().reshape(-1) for d in self.stored])
        return self.diagonal

    def to_float64(self) -> Structure:
        return replace(self, diagonal=float64(self.diagonal))

    def output_basis(self, prec: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
        # [weight.flatten(), bias] is the same (O, I') layout as W_aug.
        shape = self.param_shapes[0]
        out = shape[0]
        w = prec[: shape.numel()].reshape(out, -1)
        if len(self.param_names) == 2:
            w = torch.cat([w, prec[-out:].reshape(out, 1)], dim=1)
        return None, None, 1.0 / w
