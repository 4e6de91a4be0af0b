"""``ekfac``: KFAC's eigenbases with the eigenvalues re-estimated in a second pass (George et al. 2018)."""

from __future__ import annotations

from torch import nn

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.base import kronecker_finish_bytes, kronecker_sizes
from uncert_cli.curvature.methods.structured_base import StructuredMethod
from uncert_cli.curvature.subset import Unit


def kronecker_basis_elements(units: list[Unit]) -> int:
    """Eigenbases and an ``(O, I')`` table per Linear/Conv unit, one number per parameter elsewhere."""
    total = 0
    for u in units:
        if u.structure != "kronecker":
            total += u.num_params
            continue
        O, I = kronecker_sizes(u)
        total += O * O + I * I + O * I
    return total


class EKFACMethod(StructuredMethod):
    name = Method.ekfac
    summary = "eigenvalue-corrected KFAC"

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        return kronecker_basis_elements(units)

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        return kronecker_finish_bytes(units, element)
