"""``kfac-diag``: KFAC's top-L Kronecker eigenpairs per layer plus the corrected exact diagonal (Lee et al. 2020)."""

from __future__ import annotations

from torch import nn

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.base import kronecker_finish_bytes, kronecker_sizes
from uncert_cli.curvature.methods.ekfac import kronecker_basis_elements
from uncert_cli.curvature.methods.structured_base import StructuredMethod, rank_or_default
from uncert_cli.curvature.subset import Unit


class KFACDiagMethod(StructuredMethod):
    name = Method.kfac_diag
    summary = "top-L Kronecker eigenpairs + diagonal"
    takes_rank = True

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        k = rank_or_default(rank)
        vectors = 0
        for u in units:
            if u.structure == "kronecker":
                O, I = kronecker_sizes(u)
                vectors += O * I * min(k, O * I)  # the posterior's explicit low-rank vectors
        return kronecker_basis_elements(units) + vectors

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        return kronecker_finish_bytes(units, element)

    def rank_limit(self, units: list[Unit]) -> tuple[int, str]:
        most = max((u.num_params for u in units if u.structure == "kronecker"), default=0)
        return most, "parameters of the largest Linear/Conv layer"
