"""``vi``: a mean-field Gaussian fitted by the ELBO, starting from the diagonal Laplace (``curvature.variational``)."""

from __future__ import annotations

import dataclasses
from typing import cast

from torch import nn

from uncert_cli.core.vocabulary import FisherType, Method
from uncert_cli.curvature.blocks import Curvature, CurvatureBlock, DiagonalBlock
from uncert_cli.curvature.engine import compute_curvature
from uncert_cli.curvature.methods.base import SLACK_BYTES, BatchSource, BuildRequest, CurvatureMethod, units_of
from uncert_cli.curvature.subset import Unit
from uncert_cli.curvature.variational import VariationalSettings, fit_mean_field

# Per covered parameter while training: μ and s with their gradients and Adam's two moments each, and
# the sampled weights or the local units' variances (in the model's element size).
_TRAINING_COPIES = 9


class VIMethod(CurvatureMethod):
    """One pass for the exact GGN diagonal (the starting variances), then ``epochs`` passes of the ELBO."""

    name = Method.vi
    summary = "mean-field Gaussian trained by the ELBO, starting from diag"
    keeps_all_patches = True  # the first pass is the diag method's

    def data_passes(self, epochs: int) -> int:
        return 1 + epochs

    def build(self, model: nn.Module, source: BatchSource, request: BuildRequest) -> Curvature:
        start = compute_curvature(
            model, source(), method=Method.diag, fisher_type=FisherType.exact, task=request.task,
            subset=request.subset, on_batch=request.on_batch, include_frozen=request.include_frozen,
        )
        diagonals = [cast(DiagonalBlock, block) for block in start.blocks]  # method diag gives diagonal blocks only
        diagonal = {n: d for block in diagonals for n, d in zip(block.param_names, block.diagonal)}
        settings = VariationalSettings(
            n_data=request.n_data if request.n_data is not None else start.n_data,
            prior_precision=request.prior_precision, task=request.task, noise_std=request.noise_std,
            epochs=request.epochs, lr=request.lr, mc_samples=request.mc_samples, generator=request.generator,
            on_batch=request.on_batch, on_status=request.on_status,
        )
        units = units_of(model, request.subset, request.include_frozen)
        blocks, history = fit_mean_field(model, units, source, diagonal, settings)
        return dataclasses.replace(
            start, blocks=list[CurvatureBlock](blocks), method=Method.vi, mc_samples=request.mc_samples,
            notes={"vi": {"epochs": request.epochs, "lr": request.lr, "mc_samples": request.mc_samples,
                          "n_data": settings.n_data, "prior_precision": settings.prior_precision,
                          "noise_std": settings.noise_std, **dataclasses.asdict(history)}},
        )

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        return 2 * sum(u.num_params for u in units)  # the data term d and the mean

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        return _TRAINING_COPIES * sum(u.num_params for u in units) * element + SLACK_BYTES
