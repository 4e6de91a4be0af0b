"""A mean-field Gaussian from variational inference (``--method vi``).

The precision is diagonal, ``n_eff · d + τ``, with ``d`` the data term the variational fit found (see
``curvature.blocks.MeanFieldBlock``), so all the math is the diagonal structure's; the block's own mean
is put into the model when the factor file is opened (``factors.model_from_factor_file``).
"""

from __future__ import annotations

from dataclasses import dataclass

from uncert_cli.posterior.structures.diagonal import DiagonalStructure


@dataclass(frozen=True)
class MeanFieldStructure(DiagonalStructure):
    """``diagonal`` (P,): the variational data term ``d``; precision ``n_eff · d + τ``."""

    tag = "meanfield"
