"""The protocol every posterior structure implements, and the two ways blocks pack their parameters.

A structure is one block of the block-diagonal posterior ``N(θ*, precision⁻¹)`` with
``precision = n_eff · curvature + τ I`` (``n_eff = n_data / noise_std²``). It holds only
hyperparameter-free data (eigendecompositions, diagonals), so posteriors that differ only in
``(τ, N, σ)`` share it. What depends on the hyperparameters is the "precision state" that
:meth:`Structure.precision` returns (eigenvalues for most structures, a Woodbury state for the
low-rank ones); every other operation takes that state. Hyperparameters may be floats or
(differentiable) tensors.

Packing: a block's parameters are handled as one vector, either the flat concatenation of the
flattened parameters (:class:`FlatPacked`: diagonal, dense, joint low-rank blocks) or
``W_aug = [W.reshape(O, -1) | b]`` of shape ``(O, I')`` (:class:`WAugPacked`: one Linear/Conv
module; see ``curvature.blocks``).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.registry import register
from uncert_cli.core.vocabulary import PriorMode
from uncert_cli.curvature.blocks import KroneckerEigen

PRIOR_MODES: tuple[str, ...] = PriorMode.choices()
Scalar = float | Tensor
# Storage tag -> structure class; each class with a ``tag`` of its own enters it when it is defined.
STRUCTURES: dict[str, type[Structure]] = {}


@dataclass(frozen=True)
class Structure(ABC):
    """One posterior block.

    Subclasses set :attr:`tag` (the storage tag of the curvature block they are built from, see
    ``storage.codecs``) and implement the abstract members; setting ``tag`` registers the class in
    :data:`STRUCTURES`.
    """

    tag: ClassVar[str]
    # Whether the Jacobian-free output covariance (``output_covariance``) can use this block: its
    # covariance is diagonal in a basis ``U_G ⊗ U_A`` of a Linear/Conv module (see :meth:`output_basis`).
    factored_outputs: ClassVar[bool] = False

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[torch.Size, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "tag" in cls.__dict__:  # shared bases (FlatPacked, WAugPacked) declare none
            register(STRUCTURES, cls.tag, cls, "posterior structures")

    # ------------------------------------------------------------------ construction
    @classmethod
    @abstractmethod
    def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
        """The structure of a curvature ``block`` whose parameter names and shapes (``shapes``) are
        already checked against the model; tensors are brought to ``ref``'s device and dtype.

        Raises:
            UserError: the block's arrays do not fit its parameter shapes.
        """

    # ------------------------------------------------------------------ sizes and packing
    @property
    @abstractmethod
    def num_params(self) -> int:
        """``P``, the number of parameters the block covers."""

    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the standard normals one sample takes (default ``(P,)``)."""
        return (self.num_params,)

    @abstractmethod
    def pack(self, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        """Parameter-shaped tensors (with ``batch_dims`` leading dims) -> the block's packed layout."""

    @abstractmethod
    def unpack(self, flat: Tensor, batch_dims: int = 0) -> dict[str, Tensor]:
        """Inverse of :meth:`pack`: ``{parameter name: (*batch, *shape)}``."""

    # ------------------------------------------------------------------ the protocol
    @abstractmethod
    def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Any:
        """The precision state at ``(τ, n_eff)``: eigenvalues ``(P,)`` or ``(O, I')``, or a structure-specific state.

        ``mode`` matters only where ``τ`` can enter the factors (KFAC).
        """

    def log_det(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        """``log det`` of the precision, differentiable in ``tau`` and ``n_eff``."""
        return torch.log(self.precision(tau, n_eff, mode)).sum()

    @abstractmethod
    def marginal_variance(self, prec: Any) -> dict[str, Tensor]:
        """Diagonal of the block covariance, per parameter (parameter-shaped)."""

    @abstractmethod
    def sample_deviation(self, prec: Any, z: Tensor) -> dict[str, Tensor]:
        """Standard normals ``z`` ``(S, *noise_shape)`` -> posterior deviations ``(S, *param_shape)``."""

    @abstractmethod
    def quadratic_form(self, prec: Any, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
        """``gᵀ Σ g`` for parameter-shaped ``g`` with ``batch_dims`` leading dims -> ``(*batch,)``."""

    def effective_params(self, prec: Any, tau: float) -> float:
        """``γ = Σ λ/(λ+τ)`` over the eigenvalues ``λ`` of the data term (precision eigenvalues − τ)."""
        lam = (prec - tau).clamp_min(0)
        return float((lam / (lam + tau)).sum())

    @abstractmethod
    def curvature_diagonal(self) -> Tensor:
        """Diagonal of the (unscaled) curvature in packed order."""

    @abstractmethod
    def to_float64(self) -> Structure:
        """A CPU float64 copy (for differentiating the evidence in float64)."""

    def to(self, device: torch.device | str) -> Structure:
        """A copy with every tensor on ``device``."""
        return _map_tensors(self, lambda t: t.to(device))

    # ------------------------------------------------------------------ optional members
    @property
    def kronecker_eigen(self) -> KroneckerEigen | None:
        """The Kronecker factors' eigendecompositions, for structures that have them."""
        return None

    def output_basis(self, prec: Any) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """``(U_G (O, O) | None, U_A (I', I') | None, S (O, I'))``: the covariance is
        ``(U_G ⊗ U_A) diag(vec S) (U_G ⊗ U_A)ᵀ`` in ``W_aug`` order (None: identity). Only for
        structures with :attr:`factored_outputs`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no factored output covariance")


def _map_tensors(obj: Any, fn) -> Any:
    """``obj`` with ``fn`` applied to every tensor field (recursing into tuples and dataclasses)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_map_tensors(v, fn) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def cast(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` detached, on ``ref``'s device and in its dtype (no copy when it already is)."""
    t = t.detach()
    return t if t.device == ref.device and t.dtype == ref.dtype else t.to(device=ref.device, dtype=ref.dtype)


def sqrt(x: Scalar) -> Scalar:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


@overload
def float64(t: Tensor) -> Tensor: ...
@overload
def float64(t: None) -> None: ...
def float64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().double().cpu()


def eigen_tensors(e: KroneckerEigen) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (e.input_eigenvalues, e.input_eigenvectors, e.output_eigenvalues, e.output_eigenvectors)


def map_eigen(e: KroneckerEigen, fn: Callable[[Tensor], Tensor]) -> KroneckerEigen:
    """``fn`` applied to each of the four eigen tensors (the repairs note stays with the curvature block)."""
    input_values, input_vectors, output_values, output_vectors = (fn(t) for t in eigen_tensors(e))
    return KroneckerEigen(input_values, input_vectors, output_values, output_vectors)


@dataclass(frozen=True)
class FlatPacked(Structure, ABC):
    """Parameters packed as one flat vector ``(P,)``: the concatenation of the flattened parameters."""

    def pack(self, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        batch = tensors[self.param_names[0]].shape[:batch_dims]
        return torch.cat([tensors[n].reshape(*batch, -1) for n in self.param_names], dim=-1)

    def unpack(self, flat: Tensor, batch_dims: int = 0) -> dict[str, Tensor]:
        batch = flat.shape[:batch_dims]
        out: dict[str, Tensor] = {}
        start = 0
        for name, shape in zip(self.param_names, self.param_shapes):
            n = shape.numel()
            # one tuple, not unpacked arguments: a 0-d parameter's shape adds none
            out[name] = flat[..., start : start + n].reshape((*batch, *shape))
            start += n
        return out


@dataclass(frozen=True)
class Spectral(FlatPacked, ABC):
    """A flat block whose curvature is ``U diag(λ) Uᵀ`` in one orthonormal basis ``U`` (P, P): the precision
    ``n_eff · λ + τ`` (P,) has the same eigenvectors. A diagonal block is the case ``U = I`` (``basis`` None),
    the dense block the general one.
    """

    @property
    @abstractmethod
    def spectrum(self) -> Tensor:
        """``λ`` (P,), the curvature's eigenvalues (clamped at 0)."""

    @property
    def basis(self) -> Tensor | None:
        """``U`` (P, P) with the eigenvectors as columns; None for the identity."""
        return None

    @property
    def num_params(self) -> int:
        return self.spectrum.numel()

    def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
        return n_eff * self.spectrum + tau

    def marginal_variance(self, prec: Tensor) -> dict[str, Tensor]:
        u = self.basis
        return self.unpack(prec.reciprocal() if u is None else u.square() @ prec.reciprocal())

    def sample_deviation(self, prec: Tensor, z: Tensor) -> dict[str, Tensor]:
        u = self.basis
        scaled = z * prec.rsqrt()
        return self.unpack(scaled if u is None else scaled @ u.T, batch_dims=1)

    def quadratic_form(self, prec: Tensor, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
        u = self.basis
        g = self.pack(grads, batch_dims)
        return ((g if u is None else g @ u).square() / prec).sum(-1)


@dataclass(frozen=True)
class WAugPacked(Structure, ABC):
    """One Linear/Conv module packed as ``W_aug`` ``(O, I')`` (weight first, then an optional bias)."""

    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    @property
    def out_dim(self) -> int:
        return int(self.param_shapes[0][0])

    @property
    def in_dim(self) -> int:  # I' (bias column included)
        return math.prod(self.param_shapes[0][1:]) + (1 if self.has_bias else 0)

    @property
    def num_params(self) -> int:
        return self.out_dim * self.in_dim

    def pack(self, tensors: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        """``(*batch, O, I')``."""
        first = tensors[self.param_names[0]]
        batch = first.shape[:batch_dims]
        w = first.reshape(*batch, self.out_dim, -1)
        if self.has_bias:
            w = torch.cat([w, tensors[self.param_names[1]].reshape(*batch, self.out_dim, 1)], dim=-1)
        return w

    def unpack(self, flat: Tensor, batch_dims: int = 0) -> dict[str, Tensor]:
        """From ``(*batch, O, I')`` or ``(*batch, O·I')``."""
        batch = flat.shape[:batch_dims]
        flat = flat.reshape(*batch, self.out_dim, self.in_dim)
        in_w = self.in_dim - (1 if self.has_bias else 0)
        out = {self.param_names[0]: flat[..., :in_w].reshape(*batch, *self.param_shapes[0])}
        if self.has_bias:
            out[self.param_names[1]] = flat[..., in_w].reshape(*batch, self.out_dim)
        return out


def check_waug_shapes(module: str, shapes: tuple[torch.Size, ...]) -> tuple[int, int]:
    """``(O, I')`` of a weight (and bias) packed as ``W_aug``; a bias of another length is refused."""
    out_dim = shapes[0][0]
    in_dim = math.prod(shapes[0][1:]) + (1 if len(shapes) == 2 else 0)
    if len(shapes) == 2 and tuple(shapes[1]) != (out_dim,):
        raise UserError(f"bias of '{module}' must have shape ({out_dim},); recompute the curvature")
    return out_dim, in_dim
