"""Laplace evidence (log marginal likelihood), log-determinants, entropy and effective parameters.

The Laplace approximation of the evidence (MacKay 1992; Immer et al. 2021) for a Gaussian prior
``N(0, tau_b^{-1} I)`` on each block ``b`` of ``P_b`` parameters is::

    log Z = log p(D | θ*) + log p(θ*) + (P/2) log 2π − ½ log det(precision)
          = log p(D | θ*) − ½ Σ_b tau_b ||θ*_b||² + ½ Σ_b P_b log tau_b − ½ Σ_b log det(precision_b)

The ``(P/2) log 2π`` of the Gaussian integral cancels exactly against the prior's
``−(P/2) log 2π`` normaliser, so the second line drops *no* constant: it is the full Laplace evidence
of the parameters covered by the curvature blocks (parameters in no block are held at their MAP
value and contribute nothing). ``log p(D | θ*)`` is supplied by the caller and must include its own
constants (e.g. ``−(n D / 2) log(2π σ²)`` for a Gaussian likelihood).

All functions take hyperparameters as floats or tensors so the tuning module can differentiate them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from uncert_cli.posterior.structures import PriorMode, Scalar, Structure

LOG_2PI = math.log(2 * math.pi)


def block_log_dets(specs: Sequence[Structure], taus: Sequence[Scalar], n_eff: Scalar, mode: PriorMode) -> list[Tensor]:
    return [s.log_det(t, n_eff, mode) for s, t in zip(specs, taus)]


def block_entropy(num_params: int, logdet: float) -> float:
    """Entropy of ``N(·, precision⁻¹)``: ``½ (P (1 + log 2π) − log det precision)``."""
    return 0.5 * (num_params * (1.0 + LOG_2PI) - logdet)


def block_effective_params(spec: Structure, tau: float, n_eff: float, mode: PriorMode) -> float:
    """``γ = Σ λ / (λ + τ)`` over the eigenvalues ``λ = precision eigenvalue − τ`` of the data term.

    For ``prior_mode="eigen"`` (and diagonal blocks) ``λ`` are the eigenvalues of ``n_eff · curvature``;
    for ``"factor"`` they also contain the cross terms ``sqrt(n_eff τ)(λ_G + λ_A)`` that eq. 9 adds.
    """
    return spec.effective_params(spec.precision(tau, n_eff, mode), tau)


def log_marginal_likelihood(
    log_likelihood: Scalar,
    specs: Sequence[Structure],
    map_sq_norms: Sequence[Scalar],
    taus: Sequence[Scalar],
    n_eff: Scalar,
    mode: PriorMode,
) -> Tensor | float:
    """Laplace log evidence (see module docstring); differentiable in ``taus``, ``n_eff``, ``log_likelihood``."""
    total = log_likelihood
    for spec, sq, tau, ld in zip(specs, map_sq_norms, taus, block_log_dets(specs, taus, n_eff, mode)):
        log_tau = torch.log(tau) if isinstance(tau, Tensor) else math.log(tau)
        total = total - 0.5 * tau * sq + 0.5 * spec.num_params * log_tau - 0.5 * ld
    return total


def gaussian_log_likelihood(residual_sum_squares: Scalar, n_targets: int, noise_std: Scalar) -> Scalar:
    """``Σ log N(y; f, σ²)`` over ``n_targets`` scalar targets with the given residual sum of squares."""
    var = noise_std**2
    log_var = torch.log(var) if isinstance(var, Tensor) else math.log(var)
    return -0.5 * n_targets * (LOG_2PI + log_var) - 0.5 * residual_sum_squares / var


def residual_sum_squares(log_likelihood: float, n_targets: int, noise_std: float) -> float:
    """Invert :func:`gaussian_log_likelihood`: the RSS that gives ``log_likelihood`` at ``noise_std``."""
    var = noise_std**2
    return -2.0 * var * (log_likelihood + 0.5 * n_targets * (LOG_2PI + math.log(var)))
