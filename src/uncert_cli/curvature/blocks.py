"""Result types of the curvature engine: one block per module, plus what the whole fit was.

Conventions (shared by every part of uncert that reads curvature):

* A module's parameters are treated jointly. For a Linear/Conv module the weight is reshaped to
  ``(O, I)`` (``I = in_features`` or ``in_channels/groups * kh * kw``) and, if present, the bias is
  appended as a last column: ``W_aug = [W.reshape(O, -1) | b]`` of shape ``(O, I + 1)``. The block's
  parameter vector is ``W_aug`` flattened row-major, so a Kronecker block approximates ``G ⊗ A``
  (``torch.kron(G, A)``) with ``G`` of shape ``(O, O)`` and ``A`` of shape ``(I+1, I+1)``.
* Every block holds the *mean* over data points of the per-example curvature (GGN/Fisher of the
  negative log-likelihood, regression at unit noise variance). The posterior precision of a block is
  ``n_data * curvature + prior_precision * I`` (Ritter et al. 2018, eq. 9); for Kronecker blocks the
  curvature is ``output_factor ⊗ input_factor``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import torch

Method = Literal["diag", "kfac"]
FisherType = Literal["exact", "mc", "empirical"]
Task = Literal["classification", "regression"]


@dataclass
class KroneckerEigen:
    """Eigendecompositions of both Kronecker factors: ``A = Ua diag(la) Uaᵀ``, ``G = Ug diag(lg) Ugᵀ``."""

    input_eigenvalues: torch.Tensor  # (I',)
    input_eigenvectors: torch.Tensor  # (I', I'), columns are eigenvectors
    output_eigenvalues: torch.Tensor  # (O,)
    output_eigenvectors: torch.Tensor  # (O, O)


@dataclass
class KroneckerBlock:
    """Curvature of one Linear/Conv module, approximated as ``output_factor ⊗ input_factor``."""

    module: str  # module path in the model, e.g. "fc1" or "layer1.0.conv1"
    param_names: tuple[str, ...]  # full parameter names, weight first: ("fc1.weight", "fc1.bias")
    param_shapes: tuple[tuple[int, ...], ...]
    input_factor: torch.Tensor  # A: (I', I'), mean input (activation) second moment, bias column last
    output_factor: torch.Tensor  # G: (O, O), mean pre-activation curvature
    _eigen: KroneckerEigen | None = field(default=None, repr=False, compare=False)

    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    @property
    def num_params(self) -> int:
        return self.input_factor.shape[0] * self.output_factor.shape[0]

    def eigen(self) -> KroneckerEigen:
        """Eigendecompositions of both factors (computed once, in float64, then cast back)."""
        if self._eigen is None:
            la, ua = torch.linalg.eigh(self.input_factor.double())
            lg, ug = torch.linalg.eigh(self.output_factor.double())
            dtype = self.input_factor.dtype
            # Factors are PSD by construction; clamp round-off negatives.
            self._eigen = KroneckerEigen(
                la.clamp_min(0).to(dtype), ua.to(dtype), lg.clamp_min(0).to(dtype), ug.to(dtype)
            )
        return self._eigen

    def set_eigen(self, eigen: KroneckerEigen) -> None:
        self._eigen = eigen


@dataclass
class DiagonalBlock:
    """Diagonal curvature of one module's parameters (any module type)."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    diagonal: tuple[torch.Tensor, ...]  # one per parameter, same shape as the parameter

    @property
    def num_params(self) -> int:
        return sum(d.numel() for d in self.diagonal)


Block = Union[KroneckerBlock, DiagonalBlock]


@dataclass
class Curvature:
    """Everything the engine computed: per-module blocks and how they were computed."""

    blocks: list[Block]
    n_data: int  # number of data points the means were taken over
    task: Task
    method: Method
    fisher_type: FisherType
    mc_samples: int = 1

    @property
    def num_params(self) -> int:
        return sum(b.num_params for b in self.blocks)
