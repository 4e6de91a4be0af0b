"""``full``: the dense GGN over all covered parameters jointly (curvlinops' GGN-matrix products)."""

from __future__ import annotations

import torch
from torch import nn

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.base import eigh_working_bytes
from uncert_cli.curvature.methods.structured_base import StructuredMethod
from uncert_cli.curvature.structured import check_full_size, full_bytes
from uncert_cli.curvature.subset import Unit


class FullMethod(StructuredMethod):
    name = Method.full
    summary = "dense GGN, small models"

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        P = sum(u.num_params for u in units)
        return 2 * P * P  # the matrix and its eigenvectors

    def stored_bytes(self, model: nn.Module, units: list[Unit], rank: int | None, dtype: torch.dtype) -> int:
        # decomposed in float64 whatever the fit's dtype
        return full_bytes(sum(u.num_params for u in units))

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        P = sum(u.num_params for u in units)
        return eigh_working_bytes(P, 8) - 8 * P * P  # the stored bytes already hold matrix + vectors

    def check_size(self, units: list[Unit], max_bytes: int | None) -> None:
        check_full_size(sum(u.num_params for u in units), max_bytes)
