"""Older import path of the dense and low-rank posterior blocks, kept for one release.

They live in :mod:`uncert_cli.posterior.structures.dense` and :mod:`~uncert_cli.posterior.structures.lowrank`.
"""

from __future__ import annotations

from uncert_cli.posterior.structures.dense import DenseStructure as DenseSpec
from uncert_cli.posterior.structures.lowrank import LowRankPrecision
from uncert_cli.posterior.structures.lowrank import LowRankStructure as LowRankSpec

__all__ = ["DenseSpec", "LowRankPrecision", "LowRankSpec"]
