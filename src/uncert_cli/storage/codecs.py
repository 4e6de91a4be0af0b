"""One codec per block structure: how a curvature block is written to, read from and checked in its
``/blocks/<k>`` group of the factor file. :data:`CODECS` maps the storage tag (the group's
``structure`` attribute, ``block.structure``) to its codec; a :class:`Codec` subclass that declares a
``tag`` enters it when it is defined, and ``factor_file`` and ``checks`` only look the tag up. The
group's attributes ``module``, ``param_names``, ``param_shapes`` and ``structure`` are written and read
by ``factor_file`` for every block; a codec handles the datasets.

Datasets per tag (shapes from the parameter shapes; ``W_aug`` is ``(O, I')``, see ``curvature.blocks``)::

    kronecker:  input_factor (I',I'), output_factor (O,O), input_eigenvalues (I',),
                input_eigenvectors (I',I'), output_eigenvalues (O,), output_eigenvectors (O,O)
    diagonal:   diagonal/<j> one dataset per parameter, shaped like the parameter
    dense:      matrix (P,P), eigenvalues (P,), eigenvectors (P,P)             (--method full)
    lowrank:    eigenvalues (K,), eigenvectors (P,K), diagonal (P,)              (--method lowrank)
    ekfac:      eigenvalues (O,I'), input/output_eigenvalues, input/output_eigenvectors
    kron-diag:  rank_indices (L,2), diagonal (O,I'), input/output_eigenvalues/eigenvectors
    meanfield:  diagonal/<j>, then mean/<j>, one dataset each per parameter, shaped like it (--method vi)

The order in which a codec writes its datasets is part of the file format (the files' bytes, which
the damaged-file tests corrupt at known places, depend on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from uncert_cli.core.registry import register
from uncert_cli.curvature.blocks import (
    CurvatureBlock,
    DenseBlock,
    DiagonalBlock,
    EKFACBlock,
    KronDiagBlock,
    KroneckerBlock,
    KroneckerEigen,
    LowRankBlock,
    MeanFieldBlock,
)
from uncert_cli.storage.arrays import FLOAT_DTYPES, INDEX_DTYPES, damaged, read_tensor, write_array

# What a value check asks of an array: "factor" (symmetric, PSD diagonal), "nonnegative", "eigenvectors".
Rule = str
Expected = dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]]


@dataclass(frozen=True)
class Header:
    """The attributes every block group has: what the block covers."""

    module: str
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]


# Storage tag -> codec; each Codec subclass with a ``tag`` of its own enters it (an instance) when defined.
CODECS: dict[str, Codec] = {}


class Codec:
    """Datasets of one block structure (subclasses override all four members and set ``tag``)."""

    tag: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "tag" in cls.__dict__:  # shared bases (the Kronecker family) declare none
            register(CODECS, cls.tag, cls(), "codecs")

    def write(self, group: h5py.Group, block: Any) -> None:
        """Write the block's datasets into ``group``."""
        raise NotImplementedError

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        """The block stored in ``group`` (its layout already checked)."""
        raise NotImplementedError

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        """``{dataset: (shape, allowed dtypes)}`` the group must hold, from metadata only."""
        raise NotImplementedError

    def arrays(self, block: Any) -> list[tuple[str, Tensor, Rule]]:
        """``(dataset, tensor, rule)`` of every floating array, for the value checks."""
        raise NotImplementedError

    def check(self, block: Any, where: str, path: Path) -> None:
        """Checks beyond the per-array rules (none by default)."""


def _total(shapes: list[list[int]]) -> int:
    return sum(math.prod(s) for s in shapes)


# ------------------------------------------------------------------------------ flat structures
def _write_diagonal(group: h5py.Group, diagonal: tuple[Tensor, ...]) -> None:
    """``diagonal/<j>``: one dataset per parameter, shaped like it."""
    datasets = group.create_group("diagonal")
    for j, values in enumerate(diagonal):
        write_array(datasets, str(j), values)


def _read_diagonal(group: h5py.Group, header: Header) -> tuple[Tensor, ...]:
    datasets = group["diagonal"]
    return tuple(read_tensor(datasets[str(j)]) for j in range(len(header.param_names)))


def _expected_diagonal(shapes: list[list[int]]) -> Expected:
    return {f"diagonal/{j}": (tuple(s), FLOAT_DTYPES) for j, s in enumerate(shapes)}


def _diagonal_arrays(diagonal: tuple[Tensor, ...]) -> list[tuple[str, Tensor, Rule]]:
    return [(f"diagonal/{j}", d, "nonnegative") for j, d in enumerate(diagonal)]


class DiagonalCodec(Codec):
    tag = "diagonal"

    def write(self, group: h5py.Group, block: DiagonalBlock) -> None:
        _write_diagonal(group, block.diagonal)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        return DiagonalBlock(header.module, header.param_names, header.param_shapes, _read_diagonal(group, header))

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        return _expected_diagonal(shapes)

    def arrays(self, block: DiagonalBlock) -> list[tuple[str, Tensor, Rule]]:
        return _diagonal_arrays(block.diagonal)


class MeanFieldCodec(Codec):
    """The diagonal codec's datasets, then the variational mean (any sign) in ``mean/<j>``."""

    tag = "meanfield"

    def write(self, group: h5py.Group, block: MeanFieldBlock) -> None:
        _write_diagonal(group, block.diagonal)
        mean = group.create_group("mean")
        for j, values in enumerate(block.mean):
            write_array(mean, str(j), values)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        count = range(len(header.param_names))
        return MeanFieldBlock(header.module, header.param_names, header.param_shapes, _read_diagonal(group, header),
                              tuple(read_tensor(group["mean"][str(j)]) for j in count))

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        return {**_expected_diagonal(shapes), **{f"mean/{j}": (tuple(s), FLOAT_DTYPES) for j, s in enumerate(shapes)}}

    def arrays(self, block: MeanFieldBlock) -> list[tuple[str, Tensor, Rule]]:
        return [*_diagonal_arrays(block.diagonal), *((f"mean/{j}", m, "finite") for j, m in enumerate(block.mean))]


class DenseCodec(Codec):
    tag = "dense"

    def write(self, group: h5py.Group, block: DenseBlock) -> None:
        lam, vec = block.eigen()
        write_array(group, "matrix", block.matrix)
        write_array(group, "eigenvalues", lam)
        write_array(group, "eigenvectors", vec)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        block = DenseBlock(header.module, header.param_names, header.param_shapes, read_tensor(group["matrix"]))
        block.set_eigen(read_tensor(group["eigenvalues"]), read_tensor(group["eigenvectors"]))
        return block

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        total = _total(shapes)
        return {"matrix": ((total, total), FLOAT_DTYPES), "eigenvalues": ((total,), FLOAT_DTYPES),
                "eigenvectors": ((total, total), FLOAT_DTYPES)}

    def arrays(self, block: DenseBlock) -> list[tuple[str, Tensor, Rule]]:
        lam, vec = block.eigen()
        return [("matrix", block.matrix, "factor"), ("eigenvalues", lam, "nonnegative"),
                ("eigenvectors", vec, "eigenvectors")]


class LowRankCodec(Codec):
    tag = "lowrank"

    def write(self, group: h5py.Group, block: LowRankBlock) -> None:
        write_array(group, "eigenvalues", block.eigenvalues)
        write_array(group, "eigenvectors", block.eigenvectors)
        write_array(group, "diagonal", block.diagonal)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        return LowRankBlock(header.module, header.param_names, header.param_shapes, read_tensor(group["eigenvalues"]),
                            read_tensor(group["eigenvectors"]), read_tensor(group["diagonal"]))

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        total = _total(shapes)
        # K from the eigenvectors when they look right, else from the eigenvalues, so that the
        # message names the dataset that is actually wrong.
        lam, vec = group.get("eigenvalues"), group.get("eigenvectors")
        if isinstance(vec, h5py.Dataset) and vec.ndim == 2 and vec.shape[0] == total:
            rank = vec.shape[1]
        else:
            rank = lam.shape[0] if isinstance(lam, h5py.Dataset) and lam.ndim == 1 else -1
        if not 1 <= rank <= total:
            raise damaged(path, f"{where}/eigenvalues", f"is not a vector of 1 to {total} eigenvalues")
        return {"eigenvalues": ((rank,), FLOAT_DTYPES), "eigenvectors": ((total, rank), FLOAT_DTYPES),
                "diagonal": ((total,), FLOAT_DTYPES)}

    def arrays(self, block: LowRankBlock) -> list[tuple[str, Tensor, Rule]]:
        return [("eigenvalues", block.eigenvalues, "nonnegative"), ("eigenvectors", block.eigenvectors, "eigenvectors"),
                ("diagonal", block.diagonal, "nonnegative")]


# ------------------------------------------------------------------------------ W_aug structures
class _KroneckerFamily(Codec):
    """Blocks of one Linear/Conv module that keep KFAC's eigenbases (kronecker, ekfac, kron-diag)."""

    @staticmethod
    def write_eigen(group: h5py.Group, eigen: KroneckerEigen) -> None:
        write_array(group, "input_eigenvalues", eigen.input_eigenvalues)
        write_array(group, "input_eigenvectors", eigen.input_eigenvectors)
        write_array(group, "output_eigenvalues", eigen.output_eigenvalues)
        write_array(group, "output_eigenvectors", eigen.output_eigenvectors)

    @staticmethod
    def read_eigen(group: h5py.Group) -> KroneckerEigen:
        return KroneckerEigen(
            read_tensor(group["input_eigenvalues"]), read_tensor(group["input_eigenvectors"]),
            read_tensor(group["output_eigenvalues"]), read_tensor(group["output_eigenvectors"]),
        )

    @staticmethod
    def eigen_arrays(e: KroneckerEigen) -> list[tuple[str, Tensor, Rule]]:
        return [("input_eigenvalues", e.input_eigenvalues, "nonnegative"),
                ("input_eigenvectors", e.input_eigenvectors, "eigenvectors"),
                ("output_eigenvalues", e.output_eigenvalues, "nonnegative"),
                ("output_eigenvectors", e.output_eigenvectors, "eigenvectors")]

    def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path) -> Expected:
        weight = shapes[0]
        if len(weight) < 2 or len(shapes) > 2 or (len(shapes) == 2 and list(shapes[1]) != [weight[0]]):
            raise damaged(path, where, f"has parameter shapes {shapes}, which are not a weight (O, I, ...) and bias (O,)")
        o, i = weight[0], math.prod(weight[1:]) + (len(shapes) == 2)
        out: Expected = {"input_eigenvalues": ((i,), FLOAT_DTYPES), "input_eigenvectors": ((i, i), FLOAT_DTYPES),
                         "output_eigenvalues": ((o,), FLOAT_DTYPES), "output_eigenvectors": ((o, o), FLOAT_DTYPES)}
        out.update(self.expected_own(group, o, i, where, path))
        return out

    def expected_own(self, group: h5py.Group, o: int, i: int, where: str, path: Path) -> Expected:
        """The datasets beyond the eigenbases, for a block of ``W_aug`` shape ``(o, i)``."""
        raise NotImplementedError


class KroneckerCodec(_KroneckerFamily):
    tag = "kronecker"

    def write(self, group: h5py.Group, block: KroneckerBlock) -> None:
        write_array(group, "input_factor", block.input_factor)
        write_array(group, "output_factor", block.output_factor)
        self.write_eigen(group, block.eigen())

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        block = KroneckerBlock(header.module, header.param_names, header.param_shapes,
                               read_tensor(group["input_factor"]), read_tensor(group["output_factor"]))
        block.set_eigen(self.read_eigen(group))
        return block

    def expected_own(self, group: h5py.Group, o: int, i: int, where: str, path: Path) -> Expected:
        return {"input_factor": ((i, i), FLOAT_DTYPES), "output_factor": ((o, o), FLOAT_DTYPES)}

    def arrays(self, block: KroneckerBlock) -> list[tuple[str, Tensor, Rule]]:
        return [("input_factor", block.input_factor, "factor"), ("output_factor", block.output_factor, "factor"),
                *self.eigen_arrays(block.eigen())]


class EKFACCodec(_KroneckerFamily):
    tag = "ekfac"

    def write(self, group: h5py.Group, block: EKFACBlock) -> None:
        write_array(group, "eigenvalues", block.eigenvalues)
        self.write_eigen(group, block.eigen)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        return EKFACBlock(header.module, header.param_names, header.param_shapes, self.read_eigen(group),
                          read_tensor(group["eigenvalues"]))

    def expected_own(self, group: h5py.Group, o: int, i: int, where: str, path: Path) -> Expected:
        return {"eigenvalues": ((o, i), FLOAT_DTYPES)}

    def arrays(self, block: EKFACBlock) -> list[tuple[str, Tensor, Rule]]:
        return [("eigenvalues", block.eigenvalues, "nonnegative"), *self.eigen_arrays(block.eigen)]


class KronDiagCodec(_KroneckerFamily):
    tag = "kron-diag"

    def write(self, group: h5py.Group, block: KronDiagBlock) -> None:
        write_array(group, "rank_indices", block.rank_indices)
        write_array(group, "diagonal", block.diagonal)
        self.write_eigen(group, block.eigen)

    def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
        return KronDiagBlock(header.module, header.param_names, header.param_shapes, self.read_eigen(group),
                             read_tensor(group["rank_indices"]).long(), read_tensor(group["diagonal"]))

    def expected_own(self, group: h5py.Group, o: int, i: int, where: str, path: Path) -> Expected:
        idx = group.get("rank_indices")
        rank = idx.shape[0] if isinstance(idx, h5py.Dataset) and idx.ndim == 2 else -1
        if not 1 <= rank <= o * i:
            raise damaged(path, f"{where}/rank_indices", f"is not a (L, 2) table with 1 ≤ L ≤ {o * i}")
        return {"rank_indices": ((rank, 2), INDEX_DTYPES), "diagonal": ((o, i), FLOAT_DTYPES)}

    def arrays(self, block: KronDiagBlock) -> list[tuple[str, Tensor, Rule]]:
        return [("diagonal", block.diagonal, "nonnegative"), *self.eigen_arrays(block.eigen)]

    def check(self, block: KronDiagBlock, where: str, path: Path) -> None:
        o, i = block.diagonal.shape
        idx = block.rank_indices
        if bool((idx < 0).any()) or bool((idx[:, 0] >= o).any()) or bool((idx[:, 1] >= i).any()):
            raise damaged(path, f"{where}/rank_indices", f"holds indices outside ({o}, {i})")
        if len(torch.unique(idx[:, 0] * i + idx[:, 1])) != len(idx):
            raise damaged(path, f"{where}/rank_indices", "lists an eigenpair twice")

