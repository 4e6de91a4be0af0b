"""``uncert tune`` as a library call: choose τ (and N or σ) for a factor file and record them in it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.errors import UserError
from uncert_cli.factors import open_posterior
from uncert_cli.posterior import TuneResult, grid_edges, tune_prior_marglik, tune_val_nll
from uncert_cli.atomic import FileIdentity
from uncert_cli.store import PriorSettings, check_factor_path, update_hyperparameters

OBJECTIVES = ("marglik", "val-nll")


@dataclass
class TuneOutcome:
    objective: str
    result: TuneResult
    before: PriorSettings
    after: PriorSettings

    @property
    def at_grid_edge(self) -> list[str]:
        """val-nll: the hyperparameters whose best value lies on an edge of the searched grid."""
        return grid_edges(self.result) if self.objective == "val-nll" else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "prior_precision": self.after.prior_precision,
            "n_data": self.after.n_data,
            "noise_std": self.after.noise_std,
            "value": self.result.objective,
            "previous": {"prior_precision": self.before.prior_precision, "n_data": self.before.n_data,
                         "noise_std": self.before.noise_std},
            "history": self.result.history,
            "at_grid_edge": self.at_grid_edge,
        }


def tune_factor_file(
    path: str | Path,
    *,
    objective: str = "marglik",
    structure: str = "scalar",
    val_data: ArrayDataset | None = None,
    predictive: str = "glm",
    samples: int = 100,
    batch_size: int = 256,
    tune_noise: bool | None = None,
    write: bool = True,
    seed: int = 0,
    device: str = "cpu",
) -> TuneOutcome:
    """Tune the hyperparameters of the factor file at ``path``; with ``write`` record them in it."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective '{objective}'; use one of {', '.join(OBJECTIVES)}")
    # What the file is now: the update refuses to write if another command replaces it while we tune.
    identity = FileIdentity.of(check_factor_path(path)) if write else None
    opened = open_posterior(path, device=device)
    factors, posterior = opened.factors, opened.posterior
    before = factors.prior
    if objective == "marglik":
        regression = factors.curvature.task == "regression"
        out_dim = _output_dim(factors)
        _check_stored_log_likelihood(factors)
        log_likelihood = float(factors.fit["log_likelihood"]) if not regression else _gaussian_ll(factors, posterior)
        # With --n-data N' ≠ the fitted count the curvature counts every example N'/N times (pseudo-
        # observations, Ritter §3.4); the data term of the evidence must count them alike.
        log_likelihood *= posterior.n_data / factors.curvature.n_data
        result = tune_prior_marglik(
            posterior, log_likelihood,
            structure=structure,  # type: ignore[arg-type]
            tune_noise=regression if tune_noise is None else tune_noise,
            n_targets=factors.curvature.n_data * out_dim,
        )
    else:
        if val_data is None:
            raise UserError("--objective val-nll needs held-out data: pass --data SPEC (and --split)")
        if structure != "scalar":
            raise UserError("--objective val-nll searches a scalar prior; use --prior-structure scalar")
        batches = list(iter_batches(val_data, batch_size))
        generator = torch.Generator().manual_seed(seed)
        result = tune_val_nll(posterior, batches, kind=predictive, samples=samples, generator=generator)
    after = PriorSettings(
        prior_precision=result.prior_precision,
        prior_mode=before.prior_mode,
        n_data=result.n_data if result.n_data is not None else before.n_data,
        noise_std=result.noise_std if factors.curvature.task == "regression" else before.noise_std,
    )
    outcome = TuneOutcome(objective=objective, result=result, before=before, after=after)
    if write:
        update_hyperparameters(path, after, {"objective": objective, "result": outcome.to_dict(),
                                             "history": result.history}, expected=identity)
    return outcome


def _check_stored_log_likelihood(factors) -> None:
    """The evidence needs the fit's Σ log p(y|x, θ*); say so if the file's value is missing or unusable."""
    value = factors.fit.get("log_likelihood")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"'{factors.path}' stores log_likelihood {value!r}, which is not a finite number; "
                        "refit it with 'uncert fit' (or tune with --objective val-nll --data SPEC)")


def _output_dim(factors) -> int:
    return int(factors.model_meta.num_outputs or 1)


def _gaussian_ll(factors, posterior) -> float:
    """The fit stores Σ log p at σ = 1; the evidence wants it at the posterior's σ."""
    from uncert_cli.posterior.marglik import gaussian_log_likelihood, residual_sum_squares

    n_targets = factors.curvature.n_data * _output_dim(factors)
    rss = residual_sum_squares(float(factors.fit["log_likelihood"]), n_targets, 1.0)
    return float(gaussian_log_likelihood(rss, n_targets, posterior.noise_std))
