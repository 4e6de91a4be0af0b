"""Low-rank plus diagonal blocks: ``lowrank`` (one joint block), and the math ``kfac-diag`` (``kron_diag.py``,
one block per Linear/Conv) inherits.

Curvature ``V diag(λ) Vᵀ + diag(d)`` with ``V`` (P, K) orthonormal. The precision ``H = D + W Wᵀ``
(``D = n_eff·d + τ``, ``W = V·sqrt(n_eff·λ)``) is never formed: with ``Ŵ = D^{-1/2} W`` and the ``K x K``
eigendecomposition ``ŴᵀŴ = E diag(μ) Eᵀ`` (``B = Ŵ E``):

- ``log det H = Σ log D + Σ log(1 + μ)``                           (determinant lemma)
- ``Σ = H⁻¹ = D^{-1/2} (I − B diag(1/(1+μ)) Bᵀ) D^{-1/2}``        (Woodbury)
- ``H^{-1/2}``-type draw: ``D^{-1/2} (I + B diag(f(μ)) Bᵀ) z`` with ``f(μ) = ((1+μ)^{-1/2} − 1)/μ
  = −1/(s(1+s))``, ``s = sqrt(1+μ)``: ``B`` has orthogonal columns of squared norm ``μ``, so
  ``I + B diag(f) Bᵀ = (I + ŴŴᵀ)^{-1/2}`` and the draw has covariance exactly ``H⁻¹``.

Only ``K x K`` matrices are decomposed. The marginal variances subtract two nearly equal numbers where
the low-rank part dominates, so this state is kept in float64 whatever the model's dtype.

``lowrank`` packs its parameters flat; ``kfac-diag`` packs ``W_aug`` flattened row-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.curvature.blocks import LowRankSizes
from uncert_cli.posterior.structures.base import FlatPacked, PriorMode, Scalar, Structure, cast, float64


@dataclass
class LowRankPrecision:
    """The precision of a low-rank structure at fixed hyperparameters (float64, see module doc).

    ``d`` (P,) is ``D``; ``basis`` (P, K) is ``B = D^{-1/2} W E``; ``mu`` (K,) the eigenvalues of ``ŴᵀŴ``.
    ``dtype``/``device`` are those of the parameters (what sampling and variances are returned in).
    """

    d: Tensor
    basis: Tensor
    mu: Tensor
    dtype: torch.dtype
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _detach(x: Scalar) -> Scalar:
    return x.detach() if isinstance(x, Tensor) else x


@dataclass(frozen=True)
class LowRankStructure(LowRankSizes, FlatPacked):
    """``V diag(λ) Vᵀ + diag(d)``: ``eigenvectors`` V (P, K), ``eigenvalues`` λ (K,), ``diagonal`` d (P,)."""

    tag = "lowrank"

    eigenvalues: Tensor
    eigenvectors: Tensor
    diagonal: Tensor

    @classmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        total = sum(s.numel() for s in shapes)
        if block.eigenvectors.shape[0] != total or block.diagonal.numel() != total:
            raise UserError(f"low-rank curvature of '{block.module}' does not cover {total} parameters; recompute it")
        return cls(
            block.module, tuple(block.param_names), shapes, cast(block.eigenvalues, ref).clamp_min(0),
            cast(block.eigenvectors, ref), cast(block.diagonal, ref).reshape(-1).clamp_min(0),
        )

    def _whitened(self, tau: Scalar, n_eff: Scalar, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(D (P,), Ŵ (P, K))`` in ``dtype``; differentiable in ``tau``/``n_eff`` if they are tensors."""
        d = n_eff * self.diagonal.to(dtype) + tau
        w = self.eigenvectors.to(dtype) * (n_eff * self.eigenvalues.to(dtype).clamp_min(0)).sqrt()
        return d, w / d.sqrt().unsqueeze(1)

    def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> LowRankPrecision:
        d, w_hat = self._whitened(_detach(tau), _detach(n_eff), torch.float64)
        mu, e = torch.linalg.eigh(w_hat.T @ w_hat)  # K x K: the only decomposition
        return LowRankPrecision(d, w_hat @ e, mu.clamp_min(0), self.diagonal.dtype, self.diagonal.device)

    def log_det(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        """Determinant lemma; the Cholesky of ``I + ŴᵀŴ`` keeps it differentiable in ``τ``."""
        dtype = tau.dtype if isinstance(tau, Tensor) else torch.float64
        d, w_hat = self._whitened(tau, n_eff, dtype)
        k = w_hat.shape[1]
        chol = torch.linalg.cholesky(torch.eye(k, dtype=dtype, device=w_hat.device) + w_hat.T @ w_hat)
        return torch.log(d).sum() + 2 * torch.log(chol.diagonal()).sum()

    @staticmethod
    def _variance(prec: LowRankPrecision) -> Tensor:
        """``diag(H⁻¹)``, (P,)."""
        shrink = (prec.basis.square() / (1 + prec.mu)).sum(1)
        return ((1 - shrink).clamp_min(0) / prec.d).to(prec.dtype)

    def marginal_variance(self, prec: LowRankPrecision) -> dict[str, Tensor]:
        return self.unpack(self._variance(prec))

    def sample_deviation(self, prec: LowRankPrecision, z: Tensor) -> dict[str, Tensor]:
        """``(S, P)`` standard normals -> draws with covariance ``H⁻¹``."""
        s = (1 + prec.mu).sqrt()
        f = -1.0 / (s * (1 + s))
        z64 = z.to(torch.float64)
        x = z64 + ((z64 @ prec.basis) * f) @ prec.basis.T
        return self.unpack((x / prec.d.sqrt()).to(prec.dtype), batch_dims=1)

    def quadratic_form(self, prec: LowRankPrecision, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
        g = self.pack(grads, batch_dims)
        gh = g.to(torch.float64) / prec.d.sqrt()
        proj = gh @ prec.basis
        return (gh.square().sum(-1) - (proj.square() / (1 + prec.mu)).sum(-1)).clamp_min(0).to(g.dtype)

    def effective_params(self, prec: LowRankPrecision, tau: float) -> float:
        """``P − τ·tr(Σ)``, equal to ``Σ λ/(λ+τ)`` over the data term's eigenvalues."""
        return float(self.num_params - tau * self._variance(prec).double().sum())

    def curvature_diagonal(self) -> Tensor:
        return self.eigenvectors.square() @ self.eigenvalues + self.diagonal

    def to_float64(self) -> Structure:
        return replace(self, eigenvalues=float64(self.eigenvalues), eigenvectors=float64(self.eigenvectors),
                       diagonal=float64(self.diagonal))

