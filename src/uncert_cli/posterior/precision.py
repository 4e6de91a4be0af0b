"""Eigen math of one block's posterior precision.

A block's posterior precision is ``n_eff * curvature + tau * I`` with ``n_eff = n_data / noise_std**2``
(``n_data`` for classification). Everything here works in the block's eigenbasis, so nothing of size
``P x P`` is ever formed:

* :class:`DiagSpec` -- diagonal curvature ``d``: precision eigenvalues ``n_eff * d + tau``.
* :class:`KronSpec` -- Kronecker curvature ``G ⊗ A`` with ``A = Ua diag(la) Uaᵀ``, ``G = Ug diag(lg) Ugᵀ``.
  The precision's eigenvectors are ``Ug ⊗ Ua`` and its eigenvalues form the ``(O, I')`` matrix ``M``:

  - ``prior_mode="eigen"``: ``M[o, i] = n_eff * lg[o] * la[i] + tau`` (the exact structured precision
    ``n_eff * G ⊗ A + tau * I``);
  - ``prior_mode="factor"``: ``M[o, i] = (sqrt(n_eff) * lg[o] + sqrt(tau)) * (sqrt(n_eff) * la[i] + sqrt(tau))``
    (Ritter et al. 2018, eq. 9: ``(sqrt(N) G + sqrt(tau) I) ⊗ (sqrt(N) A + sqrt(tau) I)``).

  Parameters are packed as the row-major ``W_aug = [W.reshape(O, -1) | b]`` (see ``curvature.blocks``).
  With ``corrected`` set (EKFAC, George et al. 2018) ``M = n_eff * corrected + tau`` in the same basis.
* :class:`~uncert_cli.posterior.structured.DenseSpec` (``full``) and
  :class:`~uncert_cli.posterior.structured.LowRankSpec` (``lowrank``, ``kfac-diag``): see
  ``posterior.structured``. For a low-rank spec the "precision eigenvalues" handed around are a
  :class:`~uncert_cli.posterior.structured.LowRankPrecision` (Woodbury state) rather than a tensor.

The specs hold only hyperparameter-free data (eigendecompositions), so posteriors that differ only in
hyperparameters share them. The functions accept ``tau``/``n_eff`` as floats or (differentiable) tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Union

import torch
from torch import Tensor

from uncert_cli.curvature.blocks import (
    Block,
    DenseBlock,
    DiagonalBlock,
    EKFACBlock,
    KronDiagBlock,
    KroneckerBlock,
    KroneckerEigen,
    LowRankBlock,
)
from uncert_cli.errors import UserError
from uncert_cli.posterior.structured import (
    DenseSpec,
    LowRankPrecision,
    LowRankSpec,
    lowrank_curvature_diagonal,
    lowrank_log_det,
    lowrank_marginal_variance,
    lowrank_precision,
    lowrank_quadratic_form,
    lowrank_sample,
)

PriorMode = Literal["eigen", "factor"]
PRIOR_MODES: tuple[str, ...] = ("eigen", "factor")

Scalar = Union[float, Tensor]


@dataclass(frozen=True)
class DiagSpec:
    """A diagonal block: ``diagonal`` is the flat concatenation of the per-parameter diagonals."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[torch.Size, ...]
    diagonal: Tensor  # (P,)

    @property
    def num_params(self) -> int:
        return self.diagonal.numel()


@dataclass(frozen=True)
class KronSpec:
    """A Kronecker block in its eigenbasis. ``eigen`` is shared by every posterior built from it."""

    module: str
    param_names: tuple[str, ...]  # weight first, then optional bias
    param_shapes: tuple[torch.Size, ...]
    eigen: KroneckerEigen  # eigenvalues/vectors already on the parameters' device/dtype
    corrected: Tensor | None = None  # (O, I') EKFAC eigenvalues replacing outer(lg, la)

    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    @property
    def out_dim(self) -> int:
        return self.eigen.output_eigenvalues.numel()

    @property
    def in_dim(self) -> int:  # I' (bias column included)
        return self.eigen.input_eigenvalues.numel()

    @property
    def num_params(self) -> int:
        return self.out_dim * self.in_dim


Spec = Union[DiagSpec, KronSpec, DenseSpec, LowRankSpec]
# What precision_eigenvalues returns: eigenvalues, or the Woodbury state of a low-rank spec.
Precision = Union[Tensor, LowRankPrecision]


def _cast(t: Tensor, ref: Tensor) -> Tensor:
    t = t.detach()
    return t if t.device == ref.device and t.dtype == ref.dtype else t.to(device=ref.device, dtype=ref.dtype)


def _check_kron_shapes(block, shapes: tuple[torch.Size, ...]) -> tuple[int, int]:
    out_dim = shapes[0][0]
    in_dim = math.prod(shapes[0][1:]) + (1 if len(shapes) == 2 else 0)
    if len(shapes) == 2 and tuple(shapes[1]) != (out_dim,):
        raise UserError(f"bias of '{block.module}' must have shape ({out_dim},); recompute the curvature")
    return out_dim, in_dim


def _structured_spec(block: Block, shapes: tuple[torch.Size, ...], ref: Tensor) -> Spec:
    """Specs of the blocks of ``full``, ``lowrank``, ``ekfac`` and ``kfac-diag``."""
    names = tuple(block.param_names)
    total = sum(s.numel() for s in shapes)
    if isinstance(block, DenseBlock):
        if tuple(block.matrix.shape) != (total, total):
            raise UserError(f"dense curvature of '{block.module}' is not {total}x{total}; recompute it")
        lam, u = block.eigen()
        return DenseSpec(block.module, names, shapes, _cast(lam, ref).clamp_min(0), _cast(u, ref))
    if isinstance(block, LowRankBlock):
        if block.eigenvectors.shape[0] != total or block.diagonal.numel() != total:
            raise UserError(f"low-rank curvature of '{block.module}' does not cover {total} parameters; recompute it")
        return LowRankSpec(
            block.module, names, shapes, _cast(block.eigenvalues, ref).clamp_min(0),
            _cast(block.eigenvectors, ref), _cast(block.diagonal, ref).reshape(-1).clamp_min(0),
        )
    out_dim, in_dim = _check_kron_shapes(block, shapes)
    if isinstance(block, EKFACBlock):
        if tuple(block.eigenvalues.shape) != (out_dim, in_dim):
            raise UserError(f"EKFAC eigenvalues of '{block.module}' are not ({out_dim}, {in_dim}); recompute them")
        eig = KroneckerEigen(*(_cast(t, ref) for t in _eigen_tensors(block.eigen)))
        return KronSpec(block.module, names, shapes, eig, _cast(block.eigenvalues, ref).clamp_min(0))
    if isinstance(block, KronDiagBlock):
        if tuple(block.diagonal.shape) != (out_dim, in_dim):
            raise UserError(f"diagonal of '{block.module}' is not ({out_dim}, {in_dim}); recompute it")
        lam, vec = block.lowrank_part()
        return LowRankSpec(
            block.module, names, shapes, _cast(lam, ref).clamp_min(0), _cast(vec, ref),
            _cast(block.diagonal, ref).reshape(-1).clamp_min(0), (out_dim, in_dim),
        )
    raise UserError(f"unsupported curvature block type {type(block).__name__}; recompute the curvature")


def make_spec(block: Block, params: dict[str, Tensor]) -> Spec:
    """Validate ``block`` against the model's parameters and bring it to their device/dtype."""
    for name, shape in zip(block.param_names, block.param_shapes):
        if name not in params:
            raise UserError(
                f"curvature block '{block.module}' refers to parameter '{name}', which the model does not "
                "have; load the model the curvature was computed for"
            )
        if tuple(params[name].shape) != tuple(shape):
            raise UserError(
                f"parameter '{name}' has shape {tuple(params[name].shape)} in the model but {tuple(shape)} in "
                "the curvature; load the model the curvature was computed for"
            )
    ref = params[block.param_names[0]]
    shapes = tuple(torch.Size(s) for s in block.param_shapes)
    if isinstance(block, DiagonalBlock):
        if len(block.diagonal) != len(block.param_names) or any(
            tuple(d.shape) != tuple(s) for d, s in zip(block.diagonal, shapes)
        ):
            raise UserError(
                f"diagonal curvature of '{block.module}' does not match its parameter shapes; recompute it"
            )
        diag = torch.cat([d.detach().reshape(-1) for d in block.diagonal]).to(device=ref.device, dtype=ref.dtype)
        return DiagSpec(block.module, tuple(block.param_names), shapes, diag.clamp_min(0))
    if isinstance(block, KroneckerBlock):
        out_dim = shapes[0][0]
        in_dim = math.prod(shapes[0][1:]) + (1 if block.has_bias else 0)
        if block.has_bias and tuple(shapes[1]) != (out_dim,):
            raise UserError(f"bias of '{block.module}' must have shape ({out_dim},); recompute the curvature")
        if tuple(block.output_factor.shape) != (out_dim, out_dim) or tuple(block.input_factor.shape) != (
            in_dim,
            in_dim,
        ):
            raise UserError(
                f"Kronecker factors of '{block.module}' have shapes {tuple(block.output_factor.shape)} and "
                f"{tuple(block.input_factor.shape)}, expected ({out_dim}, {out_dim}) and ({in_dim}, {in_dim}); "
                "recompute the curvature"
            )
        eig = block.eigen()
        if all(
            t.device == ref.device and t.dtype == ref.dtype and not t.requires_grad for t in _eigen_tensors(eig)
        ):
            cast = eig  # shared as is
        else:
            cast = KroneckerEigen(*(t.detach().to(device=ref.device, dtype=ref.dtype) for t in _eigen_tensors(eig)))
        return KronSpec(block.module, tuple(block.param_names), shapes, cast)
    return _structured_spec(block, shapes, ref)


def _eigen_tensors(e: KroneckerEigen) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (e.input_eigenvalues, e.input_eigenvectors, e.output_eigenvalues, e.output_eigenvectors)


def _sqrt(x: Scalar) -> Scalar:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def precision_eigenvalues(spec: Spec, tau: Scalar, n_eff: Scalar, mode: PriorMode = "eigen") -> Precision:
    """Eigenvalues of the block's precision: ``(P,)`` for diagonal and dense, ``(O, I')`` (``M``) for
    Kronecker/EKFAC; the Woodbury state for low-rank specs. ``mode`` only affects plain Kronecker."""
    if isinstance(spec, DiagSpec):
        return n_eff * spec.diagonal + tau
    if isinstance(spec, DenseSpec):
        return n_eff * spec.eigenvalues + tau
    if isinstance(spec, LowRankSpec):
        return lowrank_precision(spec, tau, n_eff)
    if spec.corrected is not None:
        return n_eff * spec.corrected + tau
    lg, la = spec.eigen.output_eigenvalues, spec.eigen.input_eigenvalues
    if mode == "eigen":
        return n_eff * torch.outer(lg, la) + tau
    sn, st = _sqrt(n_eff), _sqrt(tau)
    return torch.outer(sn * lg + st, sn * la + st)


def log_det(spec: Spec, tau: Scalar, n_eff: Scalar, mode: PriorMode = "eigen") -> Tensor:
    """``log det`` of the block's precision (differentiable in ``tau`` and ``n_eff``)."""
    if isinstance(spec, LowRankSpec):
        return lowrank_log_det(spec, tau, n_eff)
    if isinstance(spec, KronSpec) and mode == "factor" and spec.corrected is None:
        sn, st = _sqrt(n_eff), _sqrt(tau)
        lg, la = spec.eigen.output_eigenvalues, spec.eigen.input_eigenvalues
        return spec.in_dim * torch.log(sn * lg + st).sum() + spec.out_dim * torch.log(sn * la + st).sum()
    return torch.log(precision_eigenvalues(spec, tau, n_eff, mode)).sum()  # type: ignore[arg-type]


def _flat(spec: Spec) -> bool:
    """Parameters packed as one flat vector (diag, dense, joint low-rank) rather than ``W_aug``."""
    return isinstance(spec, (DiagSpec, DenseSpec)) or (isinstance(spec, LowRankSpec) and spec.kron_shape is None)


def pack(spec: Spec, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
    """Parameter tensors (with ``batch_dims`` leading dims) -> ``(*batch, P)`` or ``(*batch, O, I')``."""
    first = tensors[spec.param_names[0]]
    batch = first.shape[:batch_dims]
    if _flat(spec):
        return torch.cat([tensors[n].reshape(*batch, -1) for n in spec.param_names], dim=-1)
    w = first.reshape(*batch, spec.out_dim, -1)
    if spec.has_bias:
        w = torch.cat([w, tensors[spec.param_names[1]].reshape(*batch, spec.out_dim, 1)], dim=-1)
    return w.reshape(*batch, -1) if isinstance(spec, LowRankSpec) else w


def unpack(spec: Spec, flat: Tensor, batch_dims: int = 0) -> dict[str, Tensor]:
    """Inverse of :func:`pack`."""
    batch = flat.shape[:batch_dims]
    out: dict[str, Tensor] = {}
    if _flat(spec):
        start = 0
        for name, shape in zip(spec.param_names, spec.param_shapes):
            n = shape.numel()
            out[name] = flat[..., start : start + n].reshape(*batch, *shape)
            start += n
        return out
    if isinstance(spec, LowRankSpec):
        flat = flat.reshape(*batch, spec.out_dim, spec.in_dim)
    in_w = spec.in_dim - (1 if spec.has_bias else 0)
    out[spec.param_names[0]] = flat[..., :in_w].reshape(*batch, *spec.param_shapes[0])
    if spec.has_bias:
        out[spec.param_names[1]] = flat[..., in_w].reshape(*batch, spec.out_dim)
    return out


def marginal_variance(spec: Spec, prec_eigs: Precision) -> dict[str, Tensor]:
    """Diagonal of the block covariance, per parameter.

    Kronecker: ``Var(W_aug[o, i]) = sum_pq Ug[o,p]² Ua[i,q]² / M[p,q]``, i.e. ``(Ug²) M⁻¹ (Ua²)ᵀ``.
    """
    if isinstance(spec, DiagSpec):
        return unpack(spec, prec_eigs.reciprocal())
    if isinstance(spec, DenseSpec):
        return unpack(spec, spec.eigenvectors.square() @ prec_eigs.reciprocal())
    if isinstance(spec, LowRankSpec):
        return unpack(spec, lowrank_marginal_variance(prec_eigs))
    ug, ua = spec.eigen.output_eigenvectors, spec.eigen.input_eigenvectors
    return unpack(spec, ug.square() @ prec_eigs.reciprocal() @ ua.square().T)


def sample_deviation(spec: Spec, prec_eigs: Precision, z: Tensor) -> dict[str, Tensor]:
    """Turn standard normals into posterior deviations, batched over the leading sample dim.

    ``z`` has shape ``(S, P)`` (diagonal) or ``(S, O, I')`` (Kronecker). For Kronecker blocks this is
    the matrix normal draw ``Ug (Z ⊙ M^{-1/2}) Uaᵀ`` (Ritter et al. 2018, App. B, eigen form):
    one batched matmul pair for all samples, no solves.
    """
    if isinstance(spec, LowRankSpec):
        return unpack(spec, lowrank_sample(prec_eigs, z), batch_dims=1)
    scaled = z * prec_eigs.rsqrt()
    if isinstance(spec, DiagSpec):
        return unpack(spec, scaled, batch_dims=1)
    if isinstance(spec, DenseSpec):
        return unpack(spec, scaled @ spec.eigenvectors.T, batch_dims=1)
    ug, ua = spec.eigen.output_eigenvectors, spec.eigen.input_eigenvectors
    return unpack(spec, torch.matmul(torch.matmul(ug, scaled), ua.T), batch_dims=1)


def noise_shape(spec: Spec) -> tuple[int, ...]:
    return (spec.num_params,) if not isinstance(spec, KronSpec) else (spec.out_dim, spec.in_dim)


def quadratic_form(spec: Spec, prec_eigs: Precision, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
    """``gᵀ Σ g`` for a batch of parameter-shaped vectors ``g`` (e.g. Jacobian rows), shape ``(*batch,)``.

    Kronecker: rotate ``g`` into the eigenbasis (``Ugᵀ g Ua``) and weight its squares by ``1/M``.
    """
    g = pack(spec, grads, batch_dims)
    if isinstance(spec, DiagSpec):
        return (g.square() / prec_eigs).sum(-1)
    if isinstance(spec, DenseSpec):
        return ((g @ spec.eigenvectors).square() / prec_eigs).sum(-1)
    if isinstance(spec, LowRankSpec):
        return lowrank_quadratic_form(prec_eigs, g)
    ug, ua = spec.eigen.output_eigenvectors, spec.eigen.input_eigenvectors
    rot = torch.matmul(torch.matmul(ug.T, g), ua)
    return (rot.square() / prec_eigs).sum((-2, -1))


def effective_params(spec: Spec, prec: Precision, tau: float) -> float:
    """``γ = Σ λ/(λ+τ)`` over the data term's eigenvalues; ``P − τ·tr(Σ)`` for low-rank specs (equal)."""
    if isinstance(spec, LowRankSpec):
        return float(spec.num_params - tau * lowrank_marginal_variance(prec).double().sum())
    lam = (prec - tau).clamp_min(0)
    return float((lam / (lam + tau)).sum())


def curvature_diagonal(spec: Spec) -> Tensor:
    """Diagonal of the block's (unscaled) curvature in packed order: ``(P,)``, or ``(O, I')`` for Kronecker."""
    if isinstance(spec, DiagSpec):
        return spec.diagonal
    if isinstance(spec, DenseSpec):
        return spec.eigenvectors.square() @ spec.eigenvalues
    if isinstance(spec, LowRankSpec):
        return lowrank_curvature_diagonal(spec)
    e = spec.eigen
    s = spec.corrected if spec.corrected is not None else torch.outer(e.output_eigenvalues, e.input_eigenvalues)
    return e.output_eigenvectors.square() @ s @ e.input_eigenvectors.square().T


def to_float64(spec: Spec) -> Spec:
    """A CPU float64 copy of ``spec`` (for differentiating the evidence in float64)."""
    def f(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().double().cpu()

    if isinstance(spec, DiagSpec):
        return replace(spec, diagonal=f(spec.diagonal))
    if isinstance(spec, DenseSpec):
        return replace(spec, eigenvalues=f(spec.eigenvalues), eigenvectors=f(spec.eigenvectors))
    if isinstance(spec, LowRankSpec):
        return replace(
            spec, eigenvalues=f(spec.eigenvalues), eigenvectors=f(spec.eigenvectors), diagonal=f(spec.diagonal)
        )
    return replace(spec, eigen=KroneckerEigen(*(f(t) for t in _eigen_tensors(spec.eigen))), corrected=f(spec.corrected))
