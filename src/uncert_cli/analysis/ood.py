"""Out-of-distribution and misclassification analysis of Laplace predictives (Ritter et al. 2018, §5.2, §5.4).

Numbers in, numbers out: a posterior and datasets in, dataclasses out; nothing is printed.

* :func:`predict_probs` runs one predictive over a dataset, ``(N, C)`` probabilities. Sampled
  predictives draw their weights once per ``(samples, seed)`` (the posterior caches them) and reuse
  them for every batch, so only the forward passes grow with the data.
* :func:`tune_on_validation` picks ``(N, τ)`` for one predictive by the validation NLL (Ritter §3.4,
  eq. 9) on held-out in-distribution data.
* :func:`evaluate_predictive` computes accuracy/NLL/Brier/ECE in distribution, entropy-based detection
  of every OOD set (OOD = positive class) and detection of the model's own errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from uncert_cli.analysis import metrics as M
from uncert_cli.core.errors import UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import HeldOutObjective
from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.posterior import LaplacePosterior, predictives, tune_val_nll
from uncert_cli.posterior.tuning import VAL_N_FACTORS, VAL_TAU_GRID, grid_edges
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE, WIDEST_TAU_GRID, tune_widest, validation_scores

OnBatch = Callable[[int], None]
LAPLACE_KINDS = predictives.kinds(lambda p: p.uses_laplace)
SAMPLED_KINDS = predictives.kinds(lambda p: p.sampled)
TUNE_OBJECTIVES = HeldOutObjective.choices()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def predict_probs(
    posterior: LaplacePosterior,
    data: ArrayDataset,
    kind: str,
    *,
    samples: int,
    batch_size: int,
    seed: int = 0,
    on_batch: OnBatch | None = None,
) -> np.ndarray:
    """Class probabilities of predictive ``kind`` for every example of ``data``, ``(N, C)`` float64."""
    if len(data) == 0:
        raise UserError(f"dataset '{data.name}' is empty; check the spec, the split or {{limit}}", mentions=("limit",))
    if posterior.task != "classification":
        raise UserError("uncert ood works on classifiers; this factor file is for regression")
    gen = _generator(seed)
    out = []
    for x, _ in iter_batches(data, batch_size):
        probs = posterior.predict(x, kind, samples=samples, generator=gen)
        assert isinstance(probs, torch.Tensor)  # a classifier's predictive is its probabilities
        out.append(probs.detach().double().cpu().numpy())
        if on_batch is not None:
            on_batch(x.shape[0])
    result = np.concatenate(out)
    if not np.isfinite(result).all():
        raise UserError(
            f"the {kind} predictive gave NaN/inf probabilities on '{data.name}'; raise {{param}} or "
            "use {predictive} glm",
            param="prior_precision", mentions=("predictive",),
        )
    return result


@dataclass
class Hyperparameters:
    """The ``(N, τ)`` a predictive was evaluated at and where they came from."""

    prior_precision: float | dict[str, float]
    n_data: float
    prior_mode: str
    source: str  # "file", "override" or "tuned"
    validation_nll: float | None = None
    grid: list[dict] = field(default_factory=list)  # tuning history: {n_data, prior_precision, nll[, entropy]}
    objective: str | None = None  # "widest" or "val-nll" when tuned here
    nll_tolerance: float | None = None  # widest: the relative NLL a wider posterior may cost
    map_validation_nll: float | None = None  # the MAP's mean NLL on the same held-out examples
    # tuned here: which of "n_data", "prior_precision" ended on an edge of the grid (the optimum may lie beyond)
    at_grid_edge: list[str] = field(default_factory=list)


def current_hyperparameters(posterior: LaplacePosterior, source: str) -> Hyperparameters:
    taus = posterior.prior_precision
    values = set(taus.values())
    tau: float | dict[str, float] = values.pop() if len(values) == 1 else dict(taus)
    return Hyperparameters(tau, posterior.n_data, posterior.prior_mode, source)


def tune_on_validation(
    posterior: LaplacePosterior,
    val_data: ArrayDataset,
    kind: str,
    *,
    samples: int,
    batch_size: int,
    seed: int = 0,
    prior_mode: str = "factor",
    tau_grid: Sequence[float] | None = None,
    n_factors: Sequence[float] = VAL_N_FACTORS,
    objective: HeldOutObjective | str = HeldOutObjective.widest,
    nll_tolerance: float = DEFAULT_NLL_TOLERANCE,
    progress: Progress = no_progress,
) -> tuple[LaplacePosterior, Hyperparameters]:
    """``(N, τ)`` for ``kind`` chosen on ``val_data`` by grid search (common samples).

    ``objective="widest"`` (default): the widest posterior whose validation NLL is within
    ``nll_tolerance`` of the best (``posterior.widest``); ``"val-nll"``: the lowest validation NLL.
    ``N`` runs over ``n_factors × posterior.n_data`` and ``τ`` over ``tau_grid`` (default: the objective's,
    ``WIDEST_TAU_GRID`` in half-decades or ``VAL_TAU_GRID`` in decades); ``prior_mode`` is the
    precision form used while tuning (Ritter et al.'s eq. 9 is ``"factor"``).
    """
    objective = HeldOutObjective.parse(objective, "objective", label="tuning objective")
    if not predictives.get(kind).uses_laplace:
        raise UserError(f"only Laplace predictives ({', '.join(LAPLACE_KINDS)}) have a prior to tune, not '{kind}'")
    if len(val_data) == 0:
        raise UserError("the validation split is empty; lower {param} or pass {no_tune}", param="val_size", mentions=("no_tune",))
    base = posterior.with_hyperparameters(prior_mode=prior_mode)
    batches = list(iter_batches(val_data, batch_size))
    if tau_grid is None:
        tau_grid = WIDEST_TAU_GRID if objective == "widest" else VAL_TAU_GRID
    grids = {"n_grid": [posterior.n_data * f for f in n_factors], "tau_grid": list(tau_grid)}
    if objective == "widest":
        result = tune_widest(base, batches, kind=kind, tolerance=nll_tolerance, samples=samples,
                             generator=_generator(seed), progress=progress, **grids)
        map_nll = result.map_nll
    else:
        result = tune_val_nll(base, batches, kind=kind, samples=samples, generator=_generator(seed),
                              progress=progress, **grids)
        map_nll = validation_scores(base, batches, kind="map", samples=1).nll
    tuned = result.apply(base)
    hp = current_hyperparameters(tuned, "tuned")
    hp.validation_nll = result.objective
    hp.grid = list(result.history)
    hp.objective = objective
    hp.nll_tolerance = nll_tolerance if objective == "widest" else None
    hp.map_validation_nll = map_nll
    hp.at_grid_edge = grid_edges(result)
    return tuned, hp


def held_out_check(
    posterior: LaplacePosterior, hp: Hyperparameters, val_data: ArrayDataset, kind: str, *, samples: int,
    batch_size: int, seed: int = 0,
) -> Hyperparameters:
    """``hp`` with the held-out NLL of ``kind`` at the posterior's own (file or hand-given) hyperparameters
    and the MAP's on the same examples filled in: the honesty check of ``ood``/``attack`` (issue 13).
    """
    batches = list(iter_batches(val_data, batch_size))
    hp.validation_nll = validation_scores(posterior, batches, kind=kind, samples=samples,
                                          generator=_generator(seed)).nll
    hp.map_validation_nll = validation_scores(posterior, batches, kind="map", samples=1).nll
    return hp


@dataclass
class InDistribution:
    """Calibration on the in-distribution evaluation set."""

    n: int
    accuracy: float
    nll: float
    brier: float
    ece: float
    mean_entropy: float
    reliability: M.ReliabilityBins


@dataclass
class OODSet:
    """Separating in- (negative) from out-of-distribution (positive) examples by two uncertainty scores."""

    n: int
    mean_entropy: float
    entropy: M.Separation  # score: predictive entropy
    max_prob: M.Separation  # score: 1 − max probability (lower confidence = more likely OOD)


@dataclass
class Misclassification:
    """Does the predictive know its own errors? (Ritter §5.4) Positive class = misclassified."""

    n_correct: int
    n_wrong: int
    mean_entropy_correct: float
    mean_entropy_wrong: float
    auroc_entropy: float | None  # None when all predictions are right (or all wrong)


@dataclass
class PredictiveResult:
    """Everything computed for one predictive."""

    kind: str
    samples: int | None
    hyperparameters: Hyperparameters | None  # None for map/dropout
    seconds: float
    in_distribution: InDistribution
    misclassification: Misclassification
    ood: dict[str, OODSet]
    entropy_in: np.ndarray  # (N_in,)
    entropy_ood: dict[str, np.ndarray]  # name -> (N_ood,)


def _nan_mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def in_distribution_metrics(probs: np.ndarray, labels: np.ndarray) -> InDistribution:
    return InDistribution(
        n=int(probs.shape[0]),
        accuracy=M.accuracy(probs, labels),
        nll=M.nll(probs, labels),
        brier=M.brier(probs, labels),
        ece=M.ece(probs, labels),
        mean_entropy=float(M.entropy(probs).mean()),
        reliability=M.reliability_bins(probs, labels),
    )


def misclassification_metrics(probs: np.ndarray, labels: np.ndarray) -> Misclassification:
    ent = M.entropy(probs)
    wrong = probs.argmax(1) != labels
    both = 0 < wrong.sum() < wrong.size
    return Misclassification(
        n_correct=int((~wrong).sum()),
        n_wrong=int(wrong.sum()),
        mean_entropy_correct=_nan_mean(ent[~wrong]),
        mean_entropy_wrong=_nan_mean(ent[wrong]),
        auroc_entropy=M.auroc(ent, wrong) if both else None,
    )


def ood_metrics(probs_in: np.ndarray, probs_out: np.ndarray) -> OODSet:
    ent_in, ent_out = M.entropy(probs_in), M.entropy(probs_out)
    positives = np.r_[np.zeros(ent_in.size, bool), np.ones(ent_out.size, bool)]
    unconfidence = 1.0 - np.r_[probs_in.max(1), probs_out.max(1)]
    return OODSet(
        n=int(probs_out.shape[0]),
        mean_entropy=float(ent_out.mean()),
        entropy=M.separation(np.r_[ent_in, ent_out], positives),
        max_prob=M.separation(unconfidence, positives),
    )


def evaluate_predictive(
    posterior: LaplacePosterior,
    kind: str,
    in_data: ArrayDataset,
    ood_sets: Mapping[str, ArrayDataset],
    *,
    samples: int,
    batch_size: int,
    seed: int = 0,
    hyperparameters: Hyperparameters | None = None,
    on_batch: OnBatch | None = None,
) -> PredictiveResult:
    """Run ``kind`` on the in-distribution set and every OOD set and compute all metrics."""
    start = time.perf_counter()
    labels = in_data.targets.numpy()
    probs_in = predict_probs(posterior, in_data, kind, samples=samples, batch_size=batch_size, seed=seed, on_batch=on_batch)
    probs_out = {
        name: predict_probs(posterior, ds, kind, samples=samples, batch_size=batch_size, seed=seed, on_batch=on_batch)
        for name, ds in ood_sets.items()
    }
    return predictive_result(kind, probs_in, probs_out, labels, samples=samples if predictives.get(kind).sampled else None,
                             hyperparameters=hyperparameters, seconds=time.perf_counter() - start)


def predictive_result(
    kind: str,
    probs_in: np.ndarray,
    probs_out: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    samples: int | None,
    hyperparameters: Hyperparameters | None = None,
    seconds: float = 0.0,
) -> PredictiveResult:
    """Every metric of one predictive from its class probabilities: in distribution ``(N, C)`` with
    ``labels`` ``(N,)``, and per OOD set ``(N_ood, C)``. ``kind`` names the predictive (a registered one,
    or a combination of several checkpoints' predictives); ``samples``: None where it samples nothing.
    """
    return PredictiveResult(
        kind=kind,
        samples=samples,
        hyperparameters=hyperparameters,
        seconds=seconds,
        in_distribution=in_distribution_metrics(probs_in, labels),
        misclassification=misclassification_metrics(probs_in, labels),
        ood={name: ood_metrics(probs_in, p) for name, p in probs_out.items()},
        entropy_in=M.entropy(probs_in),
        entropy_ood={name: M.entropy(p) for name, p in probs_out.items()},
    )


def split_validation(data: ArrayDataset, val_size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """``(validation, evaluation)``: the first ``val_size`` examples (at most half the set) and the rest."""
    if len(data) < 2:
        raise UserError(
            f"dataset '{data.name}' has {len(data)} example(s); tuning needs at least 2 (or pass {{param}})", param="no_tune"
        )
    k = max(1, min(val_size, len(data) // 2))
    return subset_rows(data, 0, k), subset_rows(data, k, len(data))


def subset_rows(data: ArrayDataset, start: int, stop: int) -> ArrayDataset:
    """Examples ``start:stop`` of ``data`` (views of its tensors)."""
    return ArrayDataset(
        data.name, data.inputs[start:stop], data.targets[start:stop], data.task, data.num_classes, data.class_names,
        data.split, data.input_names,
    )


@dataclass
class OODReport:
    """The result of ``uncert ood``: settings and one :class:`PredictiveResult` per predictive."""

    in_name: str
    n_eval: int
    n_validation: int  # 0 when nothing was tuned
    ood_names: list[str]
    results: dict[str, PredictiveResult]
    settings: dict[str, object] = field(default_factory=dict)
