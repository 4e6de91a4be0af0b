"""``diag`` and ``kfac``: the streaming engine (:func:`~uncert_cli.curvature.engine.compute_curvature`)."""

from __future__ import annotations

from torch import nn

from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.blocks import Curvature
from uncert_cli.curvature.engine import compute_curvature
from uncert_cli.curvature.methods.base import (
    BatchSource,
    BuildRequest,
    CurvatureMethod,
    kronecker_finish_bytes,
    kronecker_sizes,
)
from uncert_cli.curvature.subset import Unit


class _EngineMethod(CurvatureMethod):
    streaming = True

    def build(self, model: nn.Module, source: BatchSource, request: BuildRequest) -> Curvature:
        return compute_curvature(
            model, source(), method=self.name,
            fisher_type=request.fisher_type, task=request.task, mc_samples=request.mc_samples,
            subset=request.subset, generator=request.generator, on_batch=request.on_batch, reduce=request.reduce,
            on_outputs=request.on_outputs, include_frozen=request.include_frozen,
        )


class DiagMethod(_EngineMethod):
    """The exact GGN/Fisher diagonal of every covered parameter: one number per parameter."""

    name = Method.diag
    keeps_all_patches = True

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        return sum(u.num_params for u in units)


class KFACMethod(_EngineMethod):
    """Kronecker factors ``G ⊗ A`` of Linear/Conv modules (``O² + I'²`` numbers), diagonals elsewhere."""

    name = Method.kfac

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        total = 0
        for u in units:
            if u.structure == "kronecker":
                O, I = kronecker_sizes(u)
                total += O * O + I * I
            else:
                total += u.num_params
        return total

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        return kronecker_finish_bytes(units, element)
