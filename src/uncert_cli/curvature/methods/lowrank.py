"""``lowrank``: the top-K GGN eigenpairs (randomized subspace iteration) plus the corrected exact diagonal."""

from __future__ import annotations

from torch import nn

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.structured_base import StructuredMethod, rank_or_default
from uncert_cli.curvature.subset import Unit


class LowRankMethod(StructuredMethod):
    name = Method.lowrank
    summary = "top-K GGN eigenpairs + diagonal"
    takes_rank = True

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        P = sum(u.num_params for u in units)
        return P * (min(rank_or_default(rank), P) + 1)

    def rank_limit(self, units: list[Unit]) -> tuple[int, str]:
        return sum(u.num_params for u in units), "covered parameters"
