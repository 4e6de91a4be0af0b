"""The posterior math of one block, as functions of the block: shims over the structure classes.

Each structure implements these operations itself (:mod:`uncert_cli.posterior.structures`); the
functions below keep the older call form ``f(spec, ...)`` working for one release. New code calls
the methods (``spec.precision(τ, n_eff, mode)``, ``spec.marginal_variance(prec)``, ...).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uncert_cli.posterior.structures import (
    PRIOR_MODES,
    DenseStructure,
    DiagonalStructure,
    KroneckerStructure,
    LowRankPrecision,
    LowRankStructure,
    PriorMode,
    Scalar,
    Structure,
    structure_for,
)

# Older names of the structure classes (EKFAC is a KroneckerStructure, kfac-diag a LowRankStructure).
DiagSpec = DiagonalStructure
KronSpec = KroneckerStructure
DenseSpec = DenseStructure
LowRankSpec = LowRankStructure
Spec = Structure
# What precision_eigenvalues returns: eigenvalues, or the Woodbury state of a low-rank structure.
Precision = Tensor | LowRankPrecision

make_spec = structure_for


def precision_eigenvalues(spec: Structure, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Any:
    return spec.precision(tau, n_eff, mode)


def log_det(spec: Structure, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
    return spec.log_det(tau, n_eff, mode)


def pack(spec: Structure, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
    return spec.pack(tensors, batch_dims)


def unpack(spec: Structure, flat: Tensor, batch_dims: int = 0) -> dict[str, Tensor]:
    return spec.unpack(flat, batch_dims)


def marginal_variance(spec: Structure, prec_eigs: Any) -> dict[str, Tensor]:
    return spec.marginal_variance(prec_eigs)


def sample_deviation(spec: Structure, prec_eigs: Any, z: Tensor) -> dict[str, Tensor]:
    return spec.sample_deviation(prec_eigs, z)


def noise_shape(spec: Structure) -> tuple[int, ...]:
    return spec.noise_shape()


def quadratic_form(spec: Structure, prec_eigs: Any, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
    return spec.quadratic_form(prec_eigs, grads, batch_dims)


def effective_params(spec: Structure, prec: Any, tau: float) -> float:
    return spec.effective_params(prec, tau)


def curvature_diagonal(spec: Structure) -> Tensor:
    return spec.curvature_diagonal()


def to_float64(spec: Structure) -> Structure:
    return spec.to_float64()


__all__ = [
    "PRIOR_MODES", "DenseSpec", "DiagSpec", "KronSpec", "LowRankPrecision", "LowRankSpec", "Precision", "PriorMode",
    "Scalar", "Spec", "curvature_diagonal", "effective_params", "log_det", "make_spec", "marginal_variance",
    "noise_shape", "pack", "precision_eigenvalues", "quadratic_form", "sample_deviation", "to_float64", "unpack",
]
