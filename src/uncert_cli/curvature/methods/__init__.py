"""The curvature methods, one builder per ``--method`` in one table.

:data:`METHODS` maps a method's name to its :class:`~.base.CurvatureMethod`: how it builds the
curvature and what memory it needs (stored curvature, last phase), read by ``workflows.fit`` and
``fit_memory``. A method's blocks are of the structures named in ``curvature.blocks`` (tags) and
read back by ``posterior.structures`` and ``storage.codecs``.
"""

from __future__ import annotations

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.base import BatchSource, BuildRequest, CurvatureMethod
from uncert_cli.curvature.methods.ekfac import EKFACMethod
from uncert_cli.curvature.methods.engine_methods import DiagMethod, KFACMethod
from uncert_cli.curvature.methods.full import FullMethod
from uncert_cli.curvature.methods.kfac_diag import KFACDiagMethod
from uncert_cli.curvature.methods.lowrank import LowRankMethod
from uncert_cli.curvature.methods.vi import VIMethod

METHODS: dict[str, CurvatureMethod] = {  # keyed by Method members (str)
    method.name: method
    for method in (DiagMethod(), KFACMethod(), FullMethod(), LowRankMethod(), EKFACMethod(), KFACDiagMethod(), VIMethod())
}
RANKED_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.takes_rank)

__all__ = ["METHODS", "RANKED_METHODS", "BatchSource", "BuildRequest", "CurvatureMethod", "Method"]
