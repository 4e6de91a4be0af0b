"""Posterior math of the dense and low-rank-plus-diagonal blocks (``full``, ``lowrank``, ``kfac-diag``).

* :class:`DenseSpec` -- the exact curvature ``U diag(λ) Uᵀ`` (one ``P x P`` eigendecomposition, done
  once); the precision ``n_eff·U diag(λ) Uᵀ + τI`` has eigenvalues ``n_eff·λ + τ`` in the same basis,
  so it is handled exactly like a diagonal block rotated by ``U``.
* :class:`LowRankSpec` -- curvature ``V diag(λ) Vᵀ + diag(d)`` with ``V`` (P, K) orthonormal. The
  precision ``H = D + W Wᵀ`` (``D = n_eff·d + τ``, ``W = V·sqrt(n_eff·λ)``) is never formed: with
  ``Ŵ = D^{-1/2} W`` and the ``K x K`` eigendecomposition ``ŴᵀŴ = E diag(μ) Eᵀ`` (``B = Ŵ E``):

  - ``log det H = Σ log D + Σ log(1 + μ)``                           (determinant lemma)
  - ``Σ = H⁻¹ = D^{-1/2} (I − B diag(1/(1+μ)) Bᵀ) D^{-1/2}``        (Woodbury)
  - ``H^{-1/2}``-type draw: ``D^{-1/2} (I + B diag(f(μ)) Bᵀ) z`` with ``f(μ) = ((1+μ)^{-1/2} − 1)/μ
    = −1/(s(1+s))``, ``s = sqrt(1+μ)``: ``B`` has orthogonal columns of squared norm ``μ``, so
    ``I + B diag(f) Bᵀ = (I + ŴŴᵀ)^{-1/2}`` and the draw has covariance exactly ``H⁻¹``.

  Only ``K x K`` matrices are decomposed. The marginal variances subtract two nearly equal numbers
  where the low-rank part dominates, so this state is kept in float64 whatever the model's dtype.

Parameters are packed either flat (the concatenation of the flattened parameters, ``kron_shape``
None: joint blocks of ``full``/``lowrank``) or as ``W_aug`` flattened row-major (``kron_shape =
(O, I')``: one Linear/Conv module under ``kfac-diag``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

Scalar = float | Tensor


@dataclass(frozen=True)
class DenseSpec:
    """Exact curvature of a joint block in its eigenbasis: ``eigenvalues`` (P,), ``eigenvectors`` (P, P)."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[torch.Size, ...]
    eigenvalues: Tensor
    eigenvectors: Tensor

    @property
    def num_params(self) -> int:
        return self.eigenvalues.numel()


@dataclass(frozen=True)
class LowRankSpec:
    """``V diag(λ) Vᵀ + diag(d)``: ``eigenvectors`` V (P, K), ``eigenvalues`` λ (K,), ``diagonal`` d (P,)."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[torch.Size, ...]
    eigenvalues: Tensor
    eigenvectors: Tensor
    diagonal: Tensor
    kron_shape: tuple[int, int] | None = None  # (O, I') for W_aug packing, None for flat

    @property
    def num_params(self) -> int:
        return self.diagonal.numel()

    @property
    def rank(self) -> int:
        return self.eigenvalues.numel()

    # W_aug packing helpers (only meaningful with kron_shape)
    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    @property
    def out_dim(self) -> int:
        assert self.kron_shape is not None
        return self.kron_shape[0]

    @property
    def in_dim(self) -> int:
        assert self.kron_shape is not None
        return self.kron_shape[1]


@dataclass
class LowRankPrecision:
    """The precision of a :class:`LowRankSpec` at fixed hyperparameters (float64, see module doc).

    ``d`` (P,) is ``D``; ``basis`` (P, K) is ``B = D^{-1/2} W E``; ``mu`` (K,) the eigenvalues of ``ŴᵀŴ``.
    ``dtype``/``device`` are those of the parameters (what sampling and variances are returned in).
    """

    d: Tensor
    basis: Tensor
    mu: Tensor
    dtype: torch.dtype
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _whitened(spec: LowRankSpec, tau: Scalar, n_eff: Scalar, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(D (P,), Ŵ (P, K))`` in ``dtype``; differentiable in ``tau``/``n_eff`` if they are tensors."""
    d = n_eff * spec.diagonal.to(dtype) + tau
    w = spec.eigenvectors.to(dtype) * (n_eff * spec.eigenvalues.to(dtype).clamp_min(0)).sqrt()
    return d, w / d.sqrt().unsqueeze(1)


def lowrank_precision(spec: LowRankSpec, tau: Scalar, n_eff: Scalar) -> LowRankPrecision:
    d, w_hat = _whitened(spec, _detach(tau), _detach(n_eff), torch.float64)
    mu, e = torch.linalg.eigh(w_hat.T @ w_hat)  # K x K: the only decomposition
    return LowRankPrecision(d, w_hat @ e, mu.clamp_min(0), spec.diagonal.dtype, spec.diagonal.device)


def lowrank_log_det(spec: LowRankSpec, tau: Scalar, n_eff: Scalar) -> Tensor:
    """``log det H`` (determinant lemma); Cholesky of ``I + ŴᵀŴ`` keeps it differentiable in ``τ``."""
    dtype = tau.dtype if isinstance(tau, Tensor) else torch.float64
    d, w_hat = _whitened(spec, tau, n_eff, dtype)
    k = w_hat.shape[1]
    chol = torch.linalg.cholesky(torch.eye(k, dtype=dtype, device=w_hat.device) + w_hat.T @ w_hat)
    return torch.log(d).sum() + 2 * torch.log(chol.diagonal()).sum()


def lowrank_marginal_variance(prec: LowRankPrecision) -> Tensor:
    """``diag(H⁻¹)``, (P,)."""
    shrink = (prec.basis.square() / (1 + prec.mu)).sum(1)
    return ((1 - shrink).clamp_min(0) / prec.d).to(prec.dtype)


def lowrank_sample(prec: LowRankPrecision, z: Tensor) -> Tensor:
    """``(S, P)`` standard normals -> ``(S, P)`` draws with covariance ``H⁻¹``."""
    s = (1 + prec.mu).sqrt()
    f = -1.0 / (s * (1 + s))
    z64 = z.to(torch.float64)
    x = z64 + ((z64 @ prec.basis) * f) @ prec.basis.T
    return (x / prec.d.sqrt()).to(prec.dtype)


def lowrank_quadratic_form(prec: LowRankPrecision, g: Tensor) -> Tensor:
    """``gᵀ H⁻¹ g`` for ``g`` of shape ``(*batch, P)`` -> ``(*batch,)``."""
    gh = g.to(torch.float64) / prec.d.sqrt()
    proj = gh @ prec.basis
    return (gh.square().sum(-1) - (proj.square() / (1 + prec.mu)).sum(-1)).clamp_min(0).to(g.dtype)


def lowrank_curvature_diagonal(spec: LowRankSpec) -> Tensor:
    return spec.eigenvectors.square() @ spec.eigenvalues + spec.diagonal


def _detach(x: Scalar) -> Scalar:
    return x.detach() if isinstance(x, Tensor) else x
