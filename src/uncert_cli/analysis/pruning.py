"""Pruning by posterior uncertainty: per-weight scores, the weights to prune, and what pruning costs.

Criteria (every one is turned into a *prune key*: the lowest keys are pruned first):

* ``snr``: ``|μ|/σ`` (Graves 2011; Blundell et al. 2015) -- prune the weights whose MAP value is
  smallest relative to their posterior standard deviation. Key = score.
* ``variance-ratio``: ``σ²/σ²_prior`` -- prune the weights the data identified least (the highest
  ratios). Key = −score.
* ``obd``: Optimal Brain Damage saliency ``μ²·H_ii/2`` (LeCun et al. 1990) with ``H_ii`` the diagonal
  of the data term of the precision, ``n_eff · curvature`` (``n_eff = N``, or ``N/σ²_noise`` for
  regression). For a Kronecker block ``diag(G ⊗ A) = outer(diag G, diag A)``. Key = score.
* ``magnitude``: ``|μ|``, the baseline. Key = score.

Candidates: the weight tensors (two or more dimensions: Linear/Conv weights, embeddings) of the
modules that have a curvature block. Biases and 1-D parameters (BatchNorm/LayerNorm scales) are not
pruned: they are a tiny share of the parameters, and zeroing one shifts or silences a whole unit
rather than removing one connection. The selection is global: ``fraction`` of all candidate weights,
ranked across layers, ties broken by network order (a stable sort).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from uncert_cli.core.errors import UserError
from uncert_cli.core.likelihood import categorical_nll_sum, gaussian_nll_sum, regression_residual
from uncert_cli.core.model_state import model_state
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.posterior.predictives.base import flat as flat_outputs

CRITERIA: tuple[str, ...] = ("snr", "variance-ratio", "obd", "magnitude")
BASELINE = "magnitude"
# Criteria for which a *high* score means "prune"; all others prune the lowest scores.
_PRUNE_HIGHEST = frozenset({"variance-ratio"})


@dataclass
class ParamScores:
    """Scores of every entry of one candidate weight tensor, flattened row-major: all ``(n,)``."""

    layer: str
    param_name: str
    shape: tuple[int, ...]
    mean: Tensor
    std: Tensor
    score: Tensor


@dataclass
class ScoredWeights:
    criterion: str
    params: list[ParamScores]  # network order

    @property
    def total(self) -> int:
        return sum(p.mean.numel() for p in self.params)

    def keys(self) -> Tensor:
        """Prune keys of all candidates concatenated in network order, ``(total,)``: lowest first."""
        score = torch.cat([p.score for p in self.params])
        return -score if self.criterion in _PRUNE_HIGHEST else score

    def order(self) -> Tensor:
        """Indices into :meth:`keys` in pruning order (stable, so ties go in network order)."""
        return torch.sort(self.keys(), stable=True).indices


@dataclass
class PruneCandidate:
    layer: str
    param_name: str
    index: tuple[int, ...]  # position inside the parameter tensor
    mean: float
    std: float
    snr: float
    score: float


@dataclass
class LayerPruneCount:
    layer: str
    param_name: str
    candidates: int
    pruned: int

    @property
    def fraction(self) -> float:
        return self.pruned / self.candidates if self.candidates else 0.0


@dataclass
class PruneSelection:
    criterion: str
    fraction: float
    total_candidates: int
    pruned: int
    candidates: list[PruneCandidate]  # the first ``top`` in pruning order
    counts: list[LayerPruneCount]
    masks: dict[str, Tensor]  # param name -> bool tensor of the parameter's shape, True = pruned


def candidate_names(posterior: LaplacePosterior) -> list[tuple[str, str]]:
    """``(module, param_name)`` of every prunable weight tensor, in network order."""
    return [
        (spec.module, name)
        for spec in posterior.specs
        for name in spec.param_names
        if posterior.map_parameters[name].ndim >= 2
    ]


def curvature_diagonal(posterior: LaplacePosterior) -> dict[str, Tensor]:
    """``H_ii = n_eff · diag(curvature)`` of every covered parameter, shaped like the parameter."""
    out: dict[str, Tensor] = {}
    for spec in posterior.specs:
        # KFAC: diag(G) diag(A)ᵀ from the stored factors; diagonal blocks: the stored diagonal; the
        # other structures: the diagonal of their structured curvature
        flat = spec.curvature_diagonal().double()
        out.update(spec.unpack(flat * posterior.n_eff))
    return out


def score_weights(posterior: LaplacePosterior, criterion: str) -> ScoredWeights:
    """Scores of every candidate weight under ``criterion`` (one of :data:`CRITERIA`)."""
    if criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
    variances = posterior.marginal_variance()
    prior_var = posterior.prior_variance()
    hessian = curvature_diagonal(posterior) if criterion == "obd" else {}
    params: list[ParamScores] = []
    for layer, name in candidate_names(posterior):
        mu = posterior.map_parameters[name].double().reshape(-1)
        var = variances[name].double().reshape(-1)
        std = var.sqrt()
        if criterion == "snr":
            score = mu.abs() / std
        elif criterion == "variance-ratio":
            score = var / prior_var[name]
        elif criterion == "obd":
            score = 0.5 * mu.square() * hessian[name].reshape(-1)
        else:
            score = mu.abs()
        params.append(ParamScores(layer, name, tuple(posterior.map_parameters[name].shape), mu, std, score))
    if not params:
        raise UserError("the posterior covers no weight matrices to prune (only biases or 1-D parameters)")
    return ScoredWeights(criterion, params)


def _check_fraction(fraction: float) -> float:
    if not (0.0 <= fraction <= 1.0) or math.isnan(fraction):
        raise UserError(f"{{param}} must be between 0 and 1, got {fraction}", param="fraction")
    return float(fraction)


def pruned_count(total: int, fraction: float) -> int:
    return int(round(_check_fraction(fraction) * total))


def masks_for(scored: ScoredWeights, fraction: float, order: Tensor | None = None) -> dict[str, Tensor]:
    """Boolean masks (True = pruned) of the ``round(fraction · total)`` lowest-key weights."""
    order = scored.order() if order is None else order
    flat = torch.zeros(scored.total, dtype=torch.bool)
    flat[order[: pruned_count(scored.total, fraction)]] = True
    masks: dict[str, Tensor] = {}
    start = 0
    for p in scored.params:
        n = p.mean.numel()
        masks[p.param_name] = flat[start : start + n].reshape(p.shape)
        start += n
    return masks


def select(scored: ScoredWeights, fraction: float, *, top: int = 20) -> PruneSelection:
    """The weights to prune at ``fraction``; lists the first ``top`` of them in pruning order."""
    order = scored.order()
    k = pruned_count(scored.total, fraction)
    masks = masks_for(scored, fraction, order)
    offsets, start = [], 0
    for p in scored.params:
        offsets.append(start)
        start += p.mean.numel()
    offsets_t = torch.tensor(offsets)
    listed: list[PruneCandidate] = []
    for flat_index in order[: min(k, top)].tolist():
        which = int(torch.searchsorted(offsets_t, flat_index, right=True)) - 1
        p = scored.params[which]
        local = flat_index - offsets[which]
        mu, sd = float(p.mean[local]), float(p.std[local])
        listed.append(
            PruneCandidate(
                layer=p.layer,
                param_name=p.param_name,
                index=_unravel(local, p.shape),
                mean=mu,
                std=sd,
                snr=abs(mu) / sd if sd > 0 else math.inf,
                score=float(p.score[local]),
            )
        )
    counts = [
        LayerPruneCount(p.layer, p.param_name, p.mean.numel(), int(masks[p.param_name].sum())) for p in scored.params
    ]
    return PruneSelection(scored.criterion, fraction, scored.total, k, listed, counts, masks)


def _unravel(index: int, shape: Sequence[int]) -> tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return tuple(reversed(out))


def apply_masks(state: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``state`` (name -> tensor) with the masked entries set to zero."""
    return {
        name: (value.masked_fill(masks[name].to(value.device), 0) if name in masks else value) for name, value in state.items()
    }


# ---------------------------------------------------------------------------------------- evaluation
@dataclass
class Metrics:
    accuracy: float | None  # classification only
    nll: float  # mean negative log-likelihood per example (regression: Gaussian at noise_std)


@dataclass
class EvalPoint:
    criterion: str
    fraction: float
    pruned: int
    accuracy: float | None
    nll: float


@dataclass
class PruneEvaluation:
    dataset: str
    split: str
    examples: int
    total_candidates: int
    unpruned: Metrics
    points: list[EvalPoint]  # criterion-major, fractions ascending

    def point(self, criterion: str, fraction: float) -> EvalPoint:
        return next(p for p in self.points if p.criterion == criterion and p.fraction == fraction)


Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]


def _batch_outputs(out: Tensor, y: Tensor, task: str) -> Tensor:
    """The network's output as ``(B, C)`` (flattened as the predictives flatten it), refused in one line when its
    width cannot hold the labels ``y`` ``(B,)`` or, for regression, the targets.
    """
    if not isinstance(out, Tensor) or out.dim() == 0:
        raise UserError("the model did not return a (batch, outputs) tensor; wrap it so that forward returns one")
    flat = flat_outputs(out)
    if task == "classification":
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= flat.shape[1]):
            raise UserError(
                f"the evaluation data has label {int(y.max())} but the model output {tuple(out.shape)} holds "
                f"{flat.shape[1]} classes; evaluate on the data the model was fitted on ({{data}})",
                mentions=("data",),
            )
    elif y.numel() != flat.numel():
        raise UserError(
            f"the evaluation targets have shape {tuple(y.shape)} but the model output is {tuple(out.shape)}; "
            "evaluate on the data the model was fitted on ({data})",
            mentions=("data",),
        )
    return flat


def evaluate_model(
    model: nn.Module, params: dict[str, Tensor], batches: Batches, task: str, noise_std: float = 1.0
) -> Metrics:
    """Accuracy and mean NLL of ``model`` with ``params`` substituted (one pass over ``batches()``)."""
    total, correct, nll = 0, 0, 0.0
    with model_state(model), torch.no_grad():
        device = next(iter(params.values())).device
        for x, y in batches():
            x, y = x.to(device), y.to(device)
            # (B, C, 1) and other trailing unit dimensions are flattened to (B, C) as the predictives do
            out = _batch_outputs(functional_call(model, params, (x,)), y, task)
            if task == "classification":
                nll += float(categorical_nll_sum(out.double(), y))
                correct += int((out.argmax(-1) == y).sum())
            else:
                nll += float(gaussian_nll_sum(regression_residual(out, y), noise_std))
            total += len(x)
    if total == 0:
        raise UserError("the evaluation data is empty; pass a {data} SPEC with examples", mentions=("data",))
    return Metrics(correct / total if task == "classification" else None, nll / total)


def evaluate_pruning(
    posterior: LaplacePosterior,
    batches: Batches,
    fractions: Sequence[float],
    *,
    criteria: Sequence[str] = CRITERIA,
    dataset: str = "",
    split: str = "",
    examples: int = 0,
    on_pass: Callable[[], None] | None = None,
) -> PruneEvaluation:
    """Prune the MAP network at each fraction under each criterion and measure it on the data.

    One forward pass over the data per (criterion, fraction), plus one for the unpruned network;
    ``on_pass()`` is called after each.
    """
    fractions = sorted(_check_fraction(f) for f in fractions)
    model = posterior.model
    base = {name: p.detach() for name, p in model.named_parameters()}
    noise = posterior.noise_std if posterior.task == "regression" else 1.0
    unpruned = evaluate_model(model, base, batches, posterior.task, noise)
    if on_pass:
        on_pass()
    points: list[EvalPoint] = []
    total = 0
    for criterion in criteria:
        scored = score_weights(posterior, criterion)
        total = scored.total
        order = scored.order()  # one sort per criterion, shared by all fractions
        for fraction in fractions:
            masks = masks_for(scored, fraction, order)
            params = apply_masks(base, masks)
            m = evaluate_model(model, params, batches, posterior.task, noise)
            points.append(EvalPoint(criterion, fraction, pruned_count(total, fraction), m.accuracy, m.nll))
            if on_pass:
                on_pass()
    return PruneEvaluation(dataset, split, examples, total, unpruned, points)


@dataclass
class Comparison:
    """One criterion against the baseline (magnitude) over the evaluated fractions."""

    criterion: str
    fractions: int
    better_accuracy: int  # fractions where the criterion's accuracy is higher than the baseline's
    better_nll: int  # fractions where its NLL is lower
    mean_accuracy_difference: float | None  # mean (criterion − baseline) accuracy; None for regression
    mean_nll_difference: float  # mean (criterion − baseline) NLL


def compare_to_baseline(evaluation: PruneEvaluation, baseline: str = BASELINE) -> list[Comparison]:
    """How each criterion fares against ``baseline`` at the same fractions."""
    base = {p.fraction: p for p in evaluation.points if p.criterion == baseline}
    if not base:
        return []
    out: list[Comparison] = []
    for criterion in dict.fromkeys(p.criterion for p in evaluation.points):
        if criterion == baseline:
            continue
        pts = [p for p in evaluation.points if p.criterion == criterion and p.fraction in base]
        acc = [p.accuracy - base[p.fraction].accuracy for p in pts  # type: ignore[operator]
               if p.accuracy is not None and base[p.fraction].accuracy is not None]
        nll = [p.nll - base[p.fraction].nll for p in pts]
        out.append(
            Comparison(
                criterion=criterion,
                fractions=len(pts),
                better_accuracy=sum(d > 0 for d in acc),
                better_nll=sum(d < 0 for d in nll),
                mean_accuracy_difference=sum(acc) / len(acc) if acc else None,
                mean_nll_difference=sum(nll) / len(nll) if nll else math.nan,
            )
        )
    return out
