"""Robust symmetric eigendecomposition of curvature factors (pure math: no files, no CLI).

LAPACK's divide-and-conquer solver behind ``torch.linalg.eigh`` can stop with "failed to converge"
on the positive semi-definite matrices that fits produce routinely: a fit on few examples leaves many
exactly zero or repeated eigenvalues, and large activations put entries near 1e30 into a factor
(e.g. torchvision's resnet18 at random initialisation on 64 images). :func:`robust_eigh` therefore

1. refuses a matrix with NaN/inf (no eigensolver can repair it; the fit itself overflowed),
2. symmetrises it in float64 and divides it by its largest entry (so 1e30 entries are harmless),
3. tries ``torch.linalg.eigh``; if that fails, the same with a small jitter ``c·trace/n·I``
   (``c = 1e-12, 1e-9, 1e-6``; the shift is subtracted from the eigenvalues again, the eigenvectors
   of ``A + cI`` are those of ``A``), then scipy's relatively robust driver (``evr``), then an SVD
   (``gesvd``; for a symmetric matrix the singular vectors are eigenvectors),

and reports which step was needed, so that the fit can record it in the factor file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from uncert_cli.core.errors import UserError

JITTERS = (1e-12, 1e-9, 1e-6)  # relative to trace/n of the rescaled matrix


class NonFiniteFactorError(UserError):
    """A curvature factor holds NaN or inf: the fit overflowed before any decomposition."""


def non_finite(what: str, dtype: torch.dtype) -> NonFiniteFactorError:
    """The error for ``what`` (e.g. "the curvature of layer 'fc1'") holding NaN or inf, computed in ``dtype``:
    a float64 refit where it was not float64 already, else the inputs to check.
    """
    hint = ("refit with {dtype} float64" if dtype != torch.float64
            else "check the model's weights and the data for huge or non-finite values")
    return NonFiniteFactorError(f"{what} contains NaN or inf (the fit overflowed); {hint}", mentions=("dtype",))


@dataclass(frozen=True)
class Eigh:
    """``matrix = eigenvectors @ diag(eigenvalues) @ eigenvectorsᵀ`` (float64)."""

    eigenvalues: Tensor  # (n,), ascending, clamped at 0 (the factors are PSD by construction)
    eigenvectors: Tensor  # (n, n), orthonormal columns
    repair: str | None  # None when plain eigh converged, else the step that did (e.g. "jitter 1e-09·trace/n")


def robust_eigh(matrix: Tensor, *, what: str) -> Eigh:
    """Eigendecomposition of the symmetric PSD ``matrix`` (n, n); ``what`` names it in errors
    (e.g. "the input factor of layer 'fc1'"). Raises :class:`NonFiniteFactorError` on NaN/inf.
    """
    if not bool(torch.isfinite(matrix).all()):
        raise non_finite(what, matrix.dtype)
    a = matrix.detach().double()
    a = (a + a.T) / 2
    n = a.shape[0]
    scale = float(a.abs().max()) if n else 0.0
    if scale == 0.0:  # all zero (or empty): nothing to decompose, any orthonormal basis will do
        return Eigh(a.new_zeros(n), torch.eye(n, dtype=a.dtype, device=a.device), None)
    a = a / scale
    for repair, attempt in _attempts(a):
        try:
            lam, vec = attempt()
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue  # torch's _LinAlgError is a RuntimeError; scipy raises LinAlgError or ValueError
        if bool(torch.isfinite(lam).all()) and bool(torch.isfinite(vec).all()):
            return Eigh((lam * scale).clamp_min(0), vec, repair)
    raise UserError(f"no eigensolver converged on {what}; refit with {{dtype}} float64 or more data", mentions=("dtype",))


def _attempts(a: Tensor):
    """``(repair label, callable returning (λ ascending, U))`` in the order they are tried."""
    yield None, lambda: torch.linalg.eigh(a)
    base = float(torch.trace(a)) / a.shape[0] or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for c in JITTERS:
        yield f"jitter {c:g}·trace/n", lambda c=c: _shifted_eigh(a, c * base, eye)
    yield "scipy eigh (evr)", lambda: _scipy_eigh(a)
    yield "svd (gesvd)", lambda: _svd_eigh(a)


def _shifted_eigh(a: Tensor, shift: float, eye: Tensor) -> tuple[Tensor, Tensor]:
    lam, vec = torch.linalg.eigh(a + shift * eye)
    return lam - shift, vec


def _scipy_eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    import scipy.linalg

    lam, vec = scipy.linalg.eigh(a.cpu().numpy(), driver="evr")
    return torch.from_numpy(lam).to(a.device), torch.from_numpy(vec).to(a.device)


def _svd_eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """For symmetric ``a = U S Vᵀ``: eigenvalue ``±s_i`` (sign of ``u_iᵀ v_i``), eigenvector ``u_i``."""
    import scipy.linalg

    u, s, vt = scipy.linalg.svd(a.cpu().numpy(), lapack_driver="gesvd")
    sign = np.sign(np.einsum("ji,ij->i", u, vt))
    lam = s * np.where(sign == 0, 1.0, sign)
    order = np.argsort(lam)
    return torch.from_numpy(lam[order].copy()).to(a.device), torch.from_numpy(u[:, order].copy()).to(a.device)
