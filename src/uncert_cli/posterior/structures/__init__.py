"""One class per posterior structure, all behind the protocol of :class:`~.base.Structure`.

:data:`STRUCTURES` maps a curvature block's storage tag (``block.structure``, the ``structure``
attribute of its group in the factor file) to the class that turns it into a posterior block; a class
enters it by declaring its ``tag``, and this package imports every module in it, so a new file
``<name>.py`` here is the whole posterior side of a new structure (see docs/design.md, "How to add a
structure"). :func:`structure_for` checks a block against the model's parameters and builds it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.registry import import_package_modules
from uncert_cli.posterior.structures.base import PRIOR_MODES, STRUCTURES, PriorMode, Scalar, Structure
from uncert_cli.posterior.structures.dense import DenseStructure
from uncert_cli.posterior.structures.diagonal import DiagonalStructure
from uncert_cli.posterior.structures.kron_diag import KronDiagStructure
from uncert_cli.posterior.structures.kronecker import EKFACStructure, KroneckerStructure
from uncert_cli.posterior.structures.lowrank import LowRankPrecision, LowRankStructure
from uncert_cli.posterior.structures.meanfield import MeanFieldStructure

import_package_modules(__name__, __path__)  # every structure class registers itself in STRUCTURES


def structure_for(block: Any, params: dict[str, Tensor]) -> Structure:
    """The posterior structure of curvature ``block``, on the device and in the dtype of ``params``.

    Raises:
        UserError: the block names a parameter the model lacks or has another shape, its arrays do
            not fit, or its tag is unknown.
    """
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
    cls = STRUCTURES.get(getattr(block, "structure", ""))
    if cls is None:
        raise UserError(f"unsupported curvature block type {type(block).__name__}; recompute the curvature")
    shapes = tuple(torch.Size(s) for s in block.param_shapes)
    return cls.from_block(block, shapes, params[block.param_names[0]])


__all__ = [
    "PRIOR_MODES",
    "STRUCTURES",
    "DenseStructure",
    "DiagonalStructure",
    "EKFACStructure",
    "KronDiagStructure",
    "KroneckerStructure",
    "LowRankPrecision",
    "LowRankStructure",
    "MeanFieldStructure",
    "PriorMode",
    "Scalar",
    "Structure",
    "structure_for",
]
