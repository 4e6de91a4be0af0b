"""Kronecker blocks: KFAC (``G ⊗ A``) and EKFAC (KFAC's eigenbasis, eigenvalues re-estimated).

With ``A = Ua diag(la) Uaᵀ`` and ``G = Ug diag(lg) Ugᵀ`` the precision's eigenvectors are ``Ug ⊗ Ua``
and its eigenvalues form the ``(O, I')`` matrix ``M``:

* KFAC, ``prior_mode="eigen"``: ``M[o, i] = n_eff · lg[o] · la[i] + τ`` (the exact structured precision
  ``n_eff · G ⊗ A + τ I``);
* KFAC, ``prior_mode="factor"``: ``M[o, i] = (√n_eff · lg[o] + √τ)(√n_eff · la[i] + √τ)`` (Ritter et al.
  2018, eq. 9: ``(√N G + √τ I) ⊗ (√N A + √τ I)``);
* EKFAC (George et al. 2018): ``M = n_eff · S + τ`` with the corrected eigenvalues ``S`` (O, I'),
  whatever the prior mode.

Nothing of size ``P x P`` is formed: variances are ``(Ug²) M⁻¹ (Ua²)ᵀ``, samples the matrix-normal draw
``Ug (Z ⊙ M^{-1/2}) Uaᵀ`` (Ritter et al. 2018, App. B, eigen form), quadratic forms ``Σ (Ugᵀ g Ua)² / M``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.curvature.blocks import KroneckerEigen
from uncert_cli.posterior.structures.base import (
    PriorMode,
    Scalar,
    Structure,
    WAugPacked,
    cast,
    check_waug_shapes,
    eigen_tensors,
    float64,
    map_eigen,
    sqrt,
)


@dataclass(frozen=True)
class KroneckerStructure(WAugPacked):
    """A KFAC block in its eigenbasis. ``eigen`` is shared by every posterior built from the block."""

    tag = "kronecker"
    factored_outputs = True

    eigen: KroneckerEigen  # eigenvalues/vectors already on the parameters' device/dtype
    # (G, A) as stored: the curvature diagonal (pruning's OBD) is read from their diagonals.
    factors: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False, kw_only=True)

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        out_dim, in_dim = check_waug_shapes(block.module, shapes)
        if tuple(block.output_factor.shape) != (out_dim, out_dim) or tuple(block.input_factor.shape) != (in_dim, in_dim):
            raise UserError(
                f"Kronecker factors of '{block.module}' have shapes {tuple(block.output_factor.shape)} and "
                f"{tuple(block.input_factor.shape)}, expected ({out_dim}, {out_dim}) and ({in_dim}, {in_dim}); "
                "recompute the curvature"
            )
        eig = block.eigen()
        if not all(t.device == ref.device and t.dtype == ref.dtype and not t.requires_grad for t in eigen_tensors(eig)):
            eig = map_eigen(eig, lambda t: t.detach().to(device=ref.device, dtype=ref.dtype))
        return cls(block.module, tuple(block.param_names), shapes, eig,
                   factors=(block.output_factor, block.input_factor))

    def noise_shape(self) -> tuple[int, ...]:
        return (self.out_dim, self.in_dim)

    def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        lg, la = self.eigen.output_eigenvalues, self.eigen.input_eigenvalues
        if mode == "eigen":
            return n_eff * torch.outer(lg, la) + tau
        sn, st = sqrt(n_eff), sqrt(tau)
        return torch.outer(sn * lg + st, sn * la + st)

    def log_det(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        if mode != "factor":
            return super().log_det(tau, n_eff, mode)
        sn, st = sqrt(n_eff), sqrt(tau)
        lg, la = self.eigen.output_eigenvalues, self.eigen.input_eigenvalues
        return self.in_dim * torch.log(sn * lg + st).sum() + self.out_dim * torch.log(sn * la + st).sum()

    def marginal_variance(self, prec: Tensor) -> dict[str, Tensor]:
        ug, ua = self.eigen.output_eigenvectors, self.eigen.input_eigenvectors
        return self.unpack(ug.square() @ prec.reciprocal() @ ua.square().T)

    def sample_deviation(self, prec: Tensor, z: Tensor) -> dict[str, Tensor]:
        ug, ua = self.eigen.output_eigenvectors, self.eigen.input_eigenvectors
        return self.unpack(torch.matmul(torch.matmul(ug, z * prec.rsqrt()), ua.T), batch_dims=1)

    def quadratic_form(self, prec: Tensor, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
        g = self.pack(grads, batch_dims)
        ug, ua = self.eigen.output_eigenvectors, self.eigen.input_eigenvectors
        rot = torch.matmul(torch.matmul(ug.T, g), ua)
        return (rot.square() / prec).sum((-2, -1))

    def _eigenvalue_products(self) -> Tensor:
        """The curvature's eigenvalues in the Kronecker basis, ``(O, I')``."""
        return torch.outer(self.eigen.output_eigenvalues, self.eigen.input_eigenvalues)

    def curvature_diagonal(self) -> Tensor:
        """``(O, I')``: ``diag(G) diag(A)ᵀ`` in float64 from the stored factors, else from the eigenbasis."""
        if self.factors is not None:
            g, a = self.factors
            return torch.outer(g.double().diagonal(), a.double().diagonal())
        e = self.eigen
        return e.output_eigenvectors.square() @ self._eigenvalue_products() @ e.input_eigenvectors.square().T

    def to_float64(self) -> Structure:
        return replace(self, eigen=map_eigen(self.eigen, float64))

    @property
    def kronecker_eigen(self) -> KroneckerEigen | None:
        return self.eigen

    def output_basis(self, prec: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
        return self.eigen.output_eigenvectors, self.eigen.input_eigenvectors, 1.0 / prec


@dataclass(frozen=True)
class EKFACStructure(KroneckerStructure):
    """EKFAC: KFAC's eigenbasis with the corrected eigenvalues ``corrected`` (O, I') (clamped at 0)."""

    tag = "ekfac"

    corrected: Tensor | None = field(default=None, kw_only=True)

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        out_dim, in_dim = check_waug_shapes(block.module, shapes)
        if tuple(block.eigenvalues.shape) != (out_dim, in_dim):
            raise UserError(f"EKFAC eigenvalues of '{block.module}' are not ({out_dim}, {in_dim}); recompute them")
        eig = map_eigen(block.eigen, lambda t: cast(t, ref))
        return cls(block.module, tuple(block.param_names), shapes, eig, corrected=cast(block.eigenvalues, ref).clamp_min(0))

    def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        assert self.corrected is not None  # set by from_block
        return n_eff * self.corrected + tau

    def log_det(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        return torch.log(self.precision(tau, n_eff, mode)).sum()

    def _eigenvalue_products(self) -> Tensor:
        assert self.corrected is not None
        return self.corrected

    def to_float64(self) -> Structure:
        return replace(self, eigen=map_eigen(self.eigen, float64),
                       corrected=float64(self.corrected))
