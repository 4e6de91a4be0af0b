"""``uncert tune`` as a library call: choose τ (and N or σ) for a factor file and record them in it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from uncert_cli.core.atomic import FileIdentity, check_replaceable
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import HeldOutObjective, Objective, PriorStructure
from uncert_cli.data import ArrayDataset, ImageConversion, iter_batches
from uncert_cli.data.file_splits import split_was_given
from uncert_cli.posterior import TuneResult, grid_edges, predictives, tune_prior_marglik, tune_val_nll
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE, tune_widest, validation_scores
from uncert_cli.storage.factor_file import FactorFile, PriorSettings, check_factor_path, update_hyperparameters
from uncert_cli.storage.opening import open_posterior
from uncert_cli.workflows.forward_check import check_model_runs
from uncert_cli.workflows.inputs import load_model_data
from uncert_cli.workflows.validation import (
    HONESTY_RATIO,
    ValidationChoice,
    has_val_split,
    load_held_out,
    resolve_val_from,
)

# widest (the default, issue 13): the widest posterior whose held-out NLL is within a tolerance of the best;
# val-nll: the lowest held-out NLL; marglik: the Laplace evidence (no held-out data needed).
OBJECTIVES = Objective.choices()
HELD_OUT_OBJECTIVES = HeldOutObjective.choices()
WIDEST_PRIOR_MODE = "factor"


@dataclass
class TuneOutcome:
    """What tuning chose, with the numbers that justify it."""
    objective: str
    result: TuneResult
    before: PriorSettings
    after: PriorSettings
    held_out: dict[str, Any] | None = None  # held-out NLL at the chosen values against the MAP's (see to_dict)
    nll_tolerance: float | None = None  # widest only
    # why the held-out check was skipped (marglik on a file whose class was not imported), naming ``arch``
    unchecked: ParameterText | None = None

    @property
    def at_grid_edge(self) -> list[str]:
        """val-nll, widest: the hyperparameters whose chosen value lies on an edge of the searched grid."""
        return grid_edges(self.result) if self.objective in HELD_OUT_OBJECTIVES else []

    @property
    def worse_than_map(self) -> bool:
        """The chosen values make the held-out NLL more than 5% worse than the MAP's."""
        h = self.held_out
        return h is not None and bool(h) and h["nll"] > HONESTY_RATIO * h["map_nll"]

    def to_dict(self) -> dict[str, Any]:
        """The outcome as the ``tuned`` section of the JSON document."""
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
            "nll_tolerance": self.nll_tolerance,
            "validation": self.held_out,
        }


@dataclass
class HeldOutRequest:
    """Where ``uncert tune`` takes its held-out examples from (:meth:`load`).

    ``split`` keeps the older way: that whole split of ``data`` (its first ``limit`` examples). Otherwise
    ``val_from`` picks them (default: the set's val split, else the first ``val_size`` test examples;
    :mod:`uncert_cli.workflows.validation`). ``data`` defaults to the set the file was fitted on.
    """

    data: str | None = None
    split: str | None = None
    limit: int | None = None
    val_from: str | None = None
    val_size: int = 1000
    root: str | Path | None = None
    download: bool = False  # fetch a missing built-in set (torchvision, checksummed), as ``fit`` may
    conversion: ImageConversion | None = None

    @property
    def asks_for_data(self) -> bool:
        """Whether held-out data was asked for explicitly (so even the evidence, which needs none, checks it)."""
        return any(v is not None for v in (self.data, self.split, self.val_from))

    def load(self, stored: FactorFile, objective: Objective | str) -> tuple[ArrayDataset | None, ValidationChoice | None]:
        """The held-out examples for ``stored`` and where they came from; ``(None, None)`` for marglik when
        nothing was asked for and the set has no val split (the evidence needs none).

        Returns:
            ``(examples, choice)``, as :func:`tune_factor_file`'s ``load_held_out`` returns them.

        Raises:
            UserError: an objective that needs held-out data for a file that names no dataset, or data
                that cannot be loaded.
        """
        objective = Objective.parse(objective, "objective")
        if self.limit is not None and self.split is None:  # it would be ignored: val_size counts these examples
            raise UserError(f"{{param}} {self.limit} counts the examples of a whole {{split}}; the held-out examples "
                            "that {val_from} chooses are counted by {val_size}: pass {val_size} "
                            f"{self.limit} instead, or {{split}} with {{param}}", param="limit",
                            mentions=("split", "val_from", "val_size"))
        meta = stored.model_meta
        spec = self.data or stored.fit.get("dataset") or meta.dataset
        if self.split is not None:
            val = load_model_data(meta, spec, split=self.split, limit=self.limit, root=self.root, download=self.download,
                                  conversion=self.conversion, split_required_by=split_was_given(self.split))
            return val, ValidationChoice(self.split, f"{self.split}[0:{len(val)}]", len(val))
        explicit = self.data is not None or self.val_from is not None
        if objective == Objective.marglik and not (explicit or has_val_split(spec)):
            return None, None  # marglik needs no held-out data; check it only where the set has some
        if not spec:
            raise UserError(f"{{param}} {objective.value} needs held-out data and the file names no dataset; pass "
                            "{data} SPEC", param="objective", mentions=("data",))
        settings = SimpleNamespace(val_size=self.val_size, root=self.root, download=self.download, normalize=None,
                                   conversion=self.conversion)
        return load_held_out(meta, spec, resolve_val_from(spec, self.val_from), settings)


def tune_factor_file(
    path: str | Path,
    *,
    objective: Objective | str = Objective.marglik,
    structure: PriorStructure | str = PriorStructure.scalar,
    val_data: ArrayDataset | None = None,
    val_choice: ValidationChoice | None = None,
    load_held_out: Callable[[FactorFile], tuple[ArrayDataset | None, ValidationChoice | None]] | None = None,
    held_out: HeldOutRequest | None = None,
    predictive: str | None = None,
    samples: int = 100,
    batch_size: int = 256,
    tune_noise: bool | None = None,
    nll_tolerance: float = DEFAULT_NLL_TOLERANCE,
    write: bool = True,
    seed: int = 0,
    device: str = "cpu",
    arch: str | None = None,
    arch_kwargs: list[str] | None = None,
    runs_model: bool = True,
    progress: Progress = no_progress,
) -> TuneOutcome:
    """Tune the hyperparameters of the factor file at ``path``; with ``write`` record them in it.

    The library default stays ``marglik`` (it needs no data); ``uncert tune`` defaults to ``widest``.
    ``load_held_out``, if given, is called with the factor file once it has been opened and checked, and
    returns ``(val_data, val_choice)`` (so a file that is refused is refused before any data loads);
    ``held_out`` is the same as ``load_held_out=lambda f: held_out.load(f, objective)``, the way ``uncert
    tune`` chooses its examples.
    ``val_data`` (held-out examples, described by ``val_choice``) is needed by widest and val-nll; with
    marglik it is optional and only checked: the outcome's ``held_out`` holds the held-out NLL of
    ``predictive`` (default: probit for classifiers with the factored output covariance, else glm) at the
    chosen values against the MAP's, for every objective, whenever ``val_data`` is given.
    ``arch``/``arch_kwargs``/``runs_model``: as for :func:`~uncert_cli.storage.opening.open_posterior`; with
    ``runs_model=False`` (marglik needs no forward) a file fitted on a user's class is tuned from its
    weights alone, and the held-out check, which would run the network, is skipped (``unchecked`` says so).

    Returns:
        The chosen hyperparameters and how they were found.

    Raises:
        UserError: the file, the data or the settings cannot be used (each with its own message).
    """
    objective = Objective.parse(objective, "objective")
    structure = PriorStructure.parse(structure, "structure", label="prior structure")
    # What the file is now: the update refuses to write if another command replaces it while we tune.
    identity = FileIdentity.of(check_factor_path(path)) if write else None
    if write:  # before the search, not after it: the new file is written beside the old one
        check_replaceable(path)
    opened = open_posterior(path, device=device, arch=arch, arch_kwargs=arch_kwargs,
                            runs_model=runs_model or objective != "marglik")
    factors, posterior = opened.factors, opened.posterior
    before = factors.prior
    unchecked = None
    if load_held_out is None and held_out is not None:
        request = held_out
        load_held_out = lambda stored: request.load(stored, objective)  # noqa: E731 - the callback's form
    if opened.weights_only:
        val_data, val_choice, load_held_out = None, None, None
        unchecked = ParameterText("the held-out NLL was not checked: that runs the network, whose class uncert "
                                  "imports only when you name it with {param}", param="arch")
    if load_held_out is not None:
        val_data, val_choice = load_held_out(factors)
    if val_data is not None:  # the model's own failure on these examples is the user's to fix
        check_model_runs(opened.model.module, val_data, num_outputs=factors.model_meta.num_outputs)
    chosen = predictives.default_laplace(posterior) if predictive is None else predictives.get(predictive, "predictive").kind
    predictive = str(chosen)
    batches = list(iter_batches(val_data, batch_size)) if val_data is not None else None
    if objective == "marglik":
        if not all(block.at_mode for block in factors.curvature.blocks):
            raise UserError(
                f"'{path}' holds a variational posterior (method {factors.curvature.method}) with its own mean, and "
                "the Laplace evidence is defined for curvature taken at the checkpoint's weights; choose N and τ "
                "with {param} widest or val-nll, or refit it with another prior precision", param="objective",
            )
        regression = factors.curvature.task == "regression"
        out_dim = _output_dim(factors)
        _check_stored_log_likelihood(factors)
        log_likelihood = float(factors.fit["log_likelihood"]) if not regression else _gaussian_ll(factors, posterior)
        # With --n-data N' ≠ the fitted count the curvature counts every example N'/N times (pseudo-
        # observations, Ritter §3.4); the data term of the evidence must count them alike.
        log_likelihood *= posterior.n_data / factors.curvature.n_data
        result = tune_prior_marglik(
            posterior, log_likelihood,
            structure=structure,
            tune_noise=regression if tune_noise is None else tune_noise,
            n_targets=factors.curvature.n_data * out_dim,
        )
    else:
        if batches is None:
            raise UserError(
                f"{{param}} {objective} needs held-out data: pass {{data}} SPEC (and {{val_from}} or {{split}})",
                param="objective", mentions=("data", "val_from", "split"),
            )
        if structure != "scalar":
            raise UserError(f"{{param}} {objective} searches a scalar prior; use {{structure}} scalar",
                            param="objective", mentions=("structure",))
        generator = torch.Generator().manual_seed(seed)
        if objective == "widest":
            # Ritter et al.'s eq. 9 form, as `uncert ood` tunes: the same examples give the same choice.
            posterior = posterior.with_hyperparameters(prior_mode=WIDEST_PRIOR_MODE)
            result = tune_widest(posterior, batches, kind=predictive, tolerance=nll_tolerance, samples=samples,
                                 generator=generator, progress=progress)
        else:
            result = tune_val_nll(posterior, batches, kind=predictive, samples=samples, generator=generator,
                                  progress=progress)
    after = PriorSettings(
        prior_precision=result.prior_precision,
        prior_mode=WIDEST_PRIOR_MODE if objective == "widest" else before.prior_mode,
        n_data=result.n_data if result.n_data is not None else before.n_data,
        noise_std=result.noise_std if factors.curvature.task == "regression" else before.noise_std,
    )
    checked = None
    if batches is not None:
        checked = _held_out_nll(result.apply(posterior), posterior, batches, predictive, samples, seed, val_choice)
    outcome = TuneOutcome(objective=objective, result=result, before=before, after=after, held_out=checked,
                          nll_tolerance=nll_tolerance if objective == "widest" else None, unchecked=unchecked)
    if write:
        update_hyperparameters(path, after, {"objective": objective, "result": outcome.to_dict(),
                                             "history": result.history}, expected=identity)
    return outcome


def _check_stored_log_likelihood(factors) -> None:
    """The evidence needs the fit's Σ log p(y|x, θ*); say so if the file's value is missing or unusable."""
    value = factors.fit.get("log_likelihood")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"'{factors.path}' stores log_likelihood {value!r}, which is not a finite number; "
                        "refit it with 'uncert fit' (or tune with {objective} val-nll {data} SPEC)",
                        mentions=("objective", "data"))


def _held_out_nll(tuned, posterior, batches, predictive: str, samples: int, seed: int,
                  choice: ValidationChoice | None) -> dict[str, Any]:
    """Held-out NLL of ``predictive`` at the tuned values and of the MAP, on the same examples."""
    nll = validation_scores(tuned, batches, kind=predictive, samples=samples,
                            generator=torch.Generator().manual_seed(seed)).nll
    map_nll = validation_scores(posterior, batches, kind="map", samples=1).nll
    return {
        "from": choice.source if choice else None, "examples": choice.examples if choice else None,
        "n": sum(int(x.shape[0]) for x, _ in batches), "predictive": predictive,
        "nll": nll, "map_nll": map_nll, "nll_ratio": nll / map_nll if map_nll else None,
    }


def _output_dim(factors) -> int:
    return int(factors.model_meta.num_outputs or 1)


def _gaussian_ll(factors, posterior) -> float:
    """The fit stores Σ log p at σ = 1; the evidence wants it at the posterior's σ."""
    from uncert_cli.posterior.marglik import gaussian_log_likelihood, residual_sum_squares

    n_targets = factors.curvature.n_data * _output_dim(factors)
    rss = residual_sum_squares(float(factors.fit["log_likelihood"]), n_targets, 1.0)
    return float(gaussian_log_likelihood(rss, n_targets, posterior.noise_std))
