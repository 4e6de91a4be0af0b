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

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from uncert_cli.core.vocabulary import FisherType, Method, Task
from uncert_cli.curvature.eigen import non_finite, robust_eigh


@dataclass
class KroneckerEigen:
    """Eigendecompositions of both Kronecker factors: ``A = Ua diag(la) Uaᵀ``, ``G = Ug diag(lg) Ugᵀ``."""

    input_eigenvalues: torch.Tensor  # (I',)
    input_eigenvectors: torch.Tensor  # (I', I'), columns are eigenvectors
    output_eigenvalues: torch.Tensor  # (O,)
    output_eigenvectors: torch.Tensor  # (O, O)
    # What the eigensolver needed beyond plain eigh, e.g. ("input factor: jitter 1e-09·trace/n",);
    # recorded in the factor file (block attribute ``eigen_repairs``).
    repairs: tuple[str, ...] = ()


class CurvatureBlock:
    """What every curvature block has besides its arrays: its storage tag and a few per-structure answers.

    Each block type below overrides what differs; nothing outside the block asks its type.

    ``structure`` names the block in the factor file (the ``structure`` attribute of its group), in
    the codec table of ``storage.codecs`` and in the posterior's table of structures.
    """

    structure: ClassVar[str]
    # Whether the curvature was taken at the checkpoint's weights (a Laplace approximation), so that the
    # Laplace evidence (tune --objective marglik) applies; a variational fit has its own mean instead.
    at_mode: ClassVar[bool] = True
    # Whether only Linear/Conv modules get this block (it keeps Kronecker factors or their eigenbasis), so
    # that a file without recorded module kinds still tells those layers apart (``storage.opening``).
    linear_conv: ClassVar[bool] = False
    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def posterior_mean(self) -> tuple[torch.Tensor, ...] | None:
        """The Gaussian's mean per parameter (shaped like it) where it is not the checkpoint's weights."""
        return None

    def decompose(self) -> tuple[str, ...]:
        """Eigendecompose now, if the block stores a decomposition it has not computed yet; returns
        what the eigensolver needed beyond plain eigh (recorded as ``eigen_repairs``).
        """
        return ()

    def factor_shapes(self) -> list[list[int]] | None:
        """Shapes of the Kronecker factors ``[G, A]`` where the block stores them (the fit's table)."""
        return None

    def value_tensors(self) -> list[torch.Tensor]:
        """Arrays that no eigendecomposition checks for NaN/inf (diagonals, corrected eigenvalues)."""
        return []

    def to(self, device: torch.device) -> CurvatureBlock:
        """A copy with every tensor (cached eigendecompositions included) on ``device``."""
        moved = _moved(self, device)
        eigen = getattr(self, "_eigen", None)
        if eigen is not None:  # cached eigendecompositions are not constructor arguments of every block
            moved._eigen = _moved(eigen, device)
        return moved


@dataclass
class KroneckerBlock(CurvatureBlock):
    """Curvature of one Linear/Conv module, approximated as ``output_factor ⊗ input_factor``."""

    module: str  # module path in the model, e.g. "fc1" or "layer1.0.conv1"
    param_names: tuple[str, ...]  # full parameter names, weight first: ("fc1.weight", "fc1.bias")
    param_shapes: tuple[tuple[int, ...], ...]
    input_factor: torch.Tensor  # A: (I', I'), mean input (activation) second moment, bias column last
    output_factor: torch.Tensor  # G: (O, O), mean pre-activation curvature
    _eigen: KroneckerEigen | None = field(default=None, repr=False, compare=False)

    structure: ClassVar[str] = "kronecker"
    linear_conv: ClassVar[bool] = True

    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    @property
    def num_params(self) -> int:
        return self.input_factor.shape[0] * self.output_factor.shape[0]

    def eigen(self) -> KroneckerEigen:
        """Eigendecompositions of both factors (computed once, in float64, then cast back)."""
        if self._eigen is None:
            a = robust_eigh(self.input_factor, what=f"the input factor of layer '{self.module}'")
            g = robust_eigh(self.output_factor, what=f"the output factor of layer '{self.module}'")
            dtype = self.input_factor.dtype
            repairs = tuple(f"{side} factor: {e.repair}" for side, e in (("input", a), ("output", g)) if e.repair)
            # Factors are PSD by construction; robust_eigh clamps round-off negatives.
            self._eigen = KroneckerEigen(
                a.eigenvalues.to(dtype), a.eigenvectors.to(dtype), g.eigenvalues.to(dtype), g.eigenvectors.to(dtype),
                repairs,
            )
        return self._eigen

    def set_eigen(self, eigen: KroneckerEigen) -> None:
        self._eigen = eigen

    def decompose(self) -> tuple[str, ...]:
        return self.eigen().repairs

    def factor_shapes(self) -> list[list[int]] | None:
        return [list(self.output_factor.shape), list(self.input_factor.shape)]


@dataclass
class DiagonalBlock(CurvatureBlock):
    """Diagonal curvature of one module's parameters (any module type)."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    diagonal: tuple[torch.Tensor, ...]  # one per parameter, same shape as the parameter

    structure: ClassVar[str] = "diagonal"

    @property
    def num_params(self) -> int:
        return sum(d.numel() for d in self.diagonal)

    def value_tensors(self) -> list[torch.Tensor]:
        return list(self.diagonal)


@dataclass
class MeanFieldBlock(CurvatureBlock):
    """A mean-field Gaussian fitted by variational inference (``--method vi``): its own mean and, per
    parameter, a data term ``d ≥ 0`` in the units of a curvature diagonal, so that the variance is
    ``1 / (n_eff · d + τ)`` exactly as for a diagonal Laplace block (at the fit's ``N`` and ``τ`` it is
    the variational variance; other ``N``, ``τ`` rescale it as they would a Laplace's).
    """

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    diagonal: tuple[torch.Tensor, ...]  # d, one per parameter, shaped like it
    mean: tuple[torch.Tensor, ...]  # the variational mean, one per parameter, shaped like it

    structure: ClassVar[str] = "meanfield"
    at_mode: ClassVar[bool] = False

    @property
    def num_params(self) -> int:
        return sum(d.numel() for d in self.diagonal)

    def value_tensors(self) -> list[torch.Tensor]:
        return [*self.diagonal, *self.mean]

    def posterior_mean(self) -> tuple[torch.Tensor, ...] | None:
        return self.mean


Block = CurvatureBlock


@dataclass
class Curvature:
    """Everything the engine computed: per-module blocks and how they were computed."""

    blocks: list[CurvatureBlock]
    n_data: int  # number of data points the means were taken over
    task: Task
    method: Method
    fisher_type: FisherType
    mc_samples: int = 1
    # What the method reports beyond its blocks (e.g. the ELBO per epoch of a variational fit); the fit
    # records it in the factor file's /fit group. Not read back.
    notes: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def num_params(self) -> int:
        return sum(b.num_params for b in self.blocks)


# ---------------------------------------------------------------------------------------------
# Structures beyond diag/KFAC (``--method full | lowrank | ekfac | kfac-diag``). New types only;
# the two above are unchanged. ``structure`` is the name the factor file records.


@dataclass
class DenseBlock(CurvatureBlock):
    """The exact (dense) curvature over several modules' parameters jointly (``--method full``).

    Parameters are packed as the flat concatenation of ``param_names`` (each flattened row-major);
    ``module`` is the covered module names joined by ``+`` (e.g. ``"fc1+fc2+fc3"``).
    """

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    matrix: torch.Tensor  # (P, P), symmetric PSD, mean per-example curvature
    _eigen: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    eigen_repairs: tuple[str, ...] = field(default=(), compare=False)  # as KroneckerEigen.repairs

    structure: ClassVar[str] = "dense"

    @property
    def num_params(self) -> int:
        return self.matrix.shape[0]

    def eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eigenvalues (P,), eigenvectors (P, P))`` of ``matrix`` (float64 eigh, clamped ≥ 0)."""
        if self._eigen is None:
            e = robust_eigh(self.matrix, what=f"the curvature matrix of '{self.module}'")
            self._eigen = (e.eigenvalues.to(self.matrix.dtype), e.eigenvectors.to(self.matrix.dtype))
            self.eigen_repairs = (f"matrix: {e.repair}",) if e.repair else ()
        return self._eigen

    def set_eigen(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> None:
        self._eigen = (eigenvalues, eigenvectors)

    def decompose(self) -> tuple[str, ...]:
        self.eigen()
        return self.eigen_repairs


class LowRankSizes:
    """Sizes of a low-rank-plus-diagonal matrix ``V diag(λ) Vᵀ + diag(d)``, shared by its block and its structure."""

    eigenvalues: torch.Tensor  # λ, (K,)
    diagonal: torch.Tensor  # d, (P,)

    @property
    def num_params(self) -> int:
        """``P``, the parameters the matrix covers."""
        return self.diagonal.numel()

    @property
    def rank(self) -> int:
        """``K``, the eigenpairs it keeps."""
        return self.eigenvalues.numel()


@dataclass
class LowRankBlock(LowRankSizes, CurvatureBlock):
    """``V diag(λ) Vᵀ + diag(d)`` over several modules jointly (``--method lowrank``).

    ``V`` holds the top-K eigenvectors of the curvature (orthonormal columns) and ``d`` is the exact
    curvature diagonal minus ``diag(V diag(λ) Vᵀ)``, clamped at 0, so the approximation's diagonal
    equals the exact one wherever the clamp is inactive. Flat packing as in :class:`DenseBlock`.
    """

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    eigenvalues: torch.Tensor  # (K,)
    eigenvectors: torch.Tensor  # (P, K)
    diagonal: torch.Tensor  # (P,)

    structure: ClassVar[str] = "lowrank"


    def value_tensors(self) -> list[torch.Tensor]:
        return [self.eigenvalues, self.diagonal]


@dataclass
class KroneckerEigenBlock(CurvatureBlock):
    """A block kept in the Kronecker eigenbasis of KFAC's factors (``eigen``) plus values of its own
    (EKFAC's corrected eigenvalues, kfac-diag's diagonal); the basis is decomposed already.
    """

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    eigen: KroneckerEigen

    linear_conv: ClassVar[bool] = True

    @property
    def has_bias(self) -> bool:
        return len(self.param_names) == 2

    def decompose(self) -> tuple[str, ...]:
        return self.eigen.repairs

    @property
    def num_params(self) -> int:
        # the block's own values (O, I') hold one number per parameter
        return self.value_tensors()[0].numel()


@dataclass
class EKFACBlock(KroneckerEigenBlock):
    """Eigenvalue-corrected KFAC of one Linear/Conv module (George et al. 2018).

    Curvature ``(Ug ⊗ Ua) diag(vec S) (Ug ⊗ Ua)ᵀ``: the Kronecker eigenbases of the KFAC factors
    (``eigen``, whose eigenvalues are KFAC's and kept for reference) with the per-parameter second
    moments ``S[o, i]`` of the per-example gradients rotated into that basis. ``W_aug`` packing.
    """

    eigenvalues: torch.Tensor  # (O, I'), the corrected eigenvalues S

    structure: ClassVar[str] = "ekfac"

    def value_tensors(self) -> list[torch.Tensor]:
        return [self.eigenvalues]


@dataclass
class KronDiagBlock(KroneckerEigenBlock):
    """KFAC's top-L Kronecker eigenpairs plus a diagonal (``--method kfac-diag``; Lee et al. 2020).

    Curvature ``Σ_l λg[i_l] λa[j_l] (ug_{i_l} ⊗ ua_{j_l})(ug_{i_l} ⊗ ua_{j_l})ᵀ + diag(vec D)`` with
    ``(i_l, j_l) = rank_indices[l]`` the L largest eigenvalue products of ``G ⊗ A`` and ``D`` the exact
    GGN diagonal minus the low-rank part's diagonal, clamped at 0. ``W_aug`` packing.
    """

    rank_indices: torch.Tensor  # (L, 2) int64: (output index, input index)
    diagonal: torch.Tensor  # (O, I')

    structure: ClassVar[str] = "kron-diag"

    def value_tensors(self) -> list[torch.Tensor]:
        return [self.diagonal]

    def lowrank_part(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(λ (L,), V (O·I', L))``: the kept eigenpairs as explicit orthonormal vectors."""
        e = self.eigen
        i, j = self.rank_indices[:, 0], self.rank_indices[:, 1]
        lam = e.output_eigenvalues[i] * e.input_eigenvalues[j]
        # kron(ug_i, ua_j) flattened row-major over (O, I') = outer product of the two columns.
        vec = (e.output_eigenvectors[:, i].T.unsqueeze(2) * e.input_eigenvectors[:, j].T.unsqueeze(1))
        return lam, vec.reshape(len(i), -1).T


def eigen_repairs(block: CurvatureBlock) -> tuple[str, ...]:
    """What the eigendecompositions of ``block`` needed beyond plain eigh (empty for most blocks)."""
    return block.decompose()


def _check_finite(block: CurvatureBlock) -> None:
    """Diagonals and corrected eigenvalues get no eigendecomposition that would notice NaN/inf."""
    flat = block.value_tensors()
    if any(not bool(torch.isfinite(t).all()) for t in flat):
        raise non_finite(f"the curvature of layer '{block.module}'", flat[0].dtype)


def ensure_eigen(curvature: Curvature) -> dict[str, tuple[str, ...]]:
    """Eigendecompose every block that stores one, now (so that a factor with NaN/inf is reported
    before any file is written); returns ``{module: repairs}`` for the blocks that needed a repair.
    """
    out: dict[str, tuple[str, ...]] = {}
    for block in curvature.blocks:
        _check_finite(block)
        repairs = block.decompose()
        if repairs:
            out[block.module] = repairs
    return out


AnyBlock = CurvatureBlock


def _moved(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _moved(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def curvature_to(curvature: Curvature, device: torch.device | str) -> Curvature:
    """A copy of ``curvature`` with every block's tensors (factors, eigenbases, diagonals) on ``device``."""
    device = torch.device(device)
    return dataclasses.replace(curvature, blocks=[block.to(device) for block in curvature.blocks])
