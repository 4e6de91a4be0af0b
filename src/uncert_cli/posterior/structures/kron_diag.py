"""``kfac-diag`` (Lee et al. 2020): KFAC's top-L Kronecker eigenpairs of one Linear/Conv module as explicit
vectors plus the corrected exact diagonal, ``V diag(λ) Vᵀ + diag(d)`` over ``W_aug`` flattened row-major.

The posterior math is the low-rank structure's (``lowrank.py``: determinant lemma, Woodbury, only a
``K x K`` eigendecomposition); only the packing and the construction from the block differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.posterior.structures.base import Structure, WAugPacked, cast, check_waug_shapes
from uncert_cli.posterior.structures.lowrank import LowRankStructure


@dataclass(frozen=True)
class KronDiagStructure(WAugPacked, LowRankStructure):
    """``kfac-diag``: the kept Kronecker eigenpairs as explicit vectors (P = O·I', ``W_aug`` order)
    plus the corrected diagonal; posterior math as :class:`LowRankStructure`.
    """

    tag = "kron-diag"

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        out_dim, in_dim = check_waug_shapes(block.module, shapes)
        if tuple(block.diagonal.shape) != (out_dim, in_dim):
            raise UserError(f"diagonal of '{block.module}' is not ({out_dim}, {in_dim}); recompute it")
        lam, vec = block.lowrank_part()
        return cls(
            block.module, tuple(block.param_names), shapes, cast(lam, ref).clamp_min(0), cast(vec, ref),
            cast(block.diagonal, ref).reshape(-1).clamp_min(0),
        )

    @property
    def num_params(self) -> int:
        return self.diagonal.numel()

    def noise_shape(self) -> tuple[int, ...]:
        return (self.num_params,)

    def pack(self, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        """``(*batch, O·I')``: ``W_aug`` flattened row-major (the low-rank math works on vectors)."""
        w = WAugPacked.pack(self, tensors, batch_dims)
        return w.reshape(*w.shape[:batch_dims], -1)
