"""The methods that pass over the data several times in one process (``curvature.structured``)."""

from __future__ import annotations

from torch import nn

from uncert_cli.curvature.blocks import Curvature
from uncert_cli.curvature.methods.base import BatchSource, BuildRequest, CurvatureMethod
from uncert_cli.curvature.structured import DEFAULT_RANK, compute_structured_curvature


class StructuredMethod(CurvatureMethod):
    def build(self, model: nn.Module, source: BatchSource, request: BuildRequest) -> Curvature:
        return compute_structured_curvature(
            model, source, method=self.name, fisher_type=request.fisher_type, task=request.task,
            mc_samples=request.mc_samples, subset=request.subset, rank=request.rank, generator=request.generator,
            on_batch=request.on_batch, max_bytes=request.max_bytes, include_frozen=request.include_frozen,
        )


def rank_or_default(rank: int | None) -> int:
    return DEFAULT_RANK if rank is None else rank
