"""Scores of a predictive on held-out ``(x, y)`` batches: the quantities every tuning objective compares.

:func:`grid_scores` scores one posterior under many hyperparameter settings batch by batch, so the
linearised predictives compute each batch's Jacobian part once for the whole grid
(:func:`~uncert_cli.posterior.predictives.predict_many`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.likelihood import gaussian_nll
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.posterior.laplace import LaplacePosterior
from uncert_cli.posterior.predictives import predict_many

OnExamples = Callable[[int], None]


@dataclass(frozen=True)
class ValidationScores:
    """Means over the held-out examples: NLL of the targets and entropy of the predictive (nats)."""

    nll: float
    entropy: float


def validation_scores(
    posterior: LaplacePosterior, val_batches: Iterable, *, kind: str, samples: int, generator=None
) -> ValidationScores:
    """Mean NLL and mean predictive entropy of ``kind`` over ``(x, y)`` batches.

    Classification: ``−log p(y)`` and ``−Σ_c p_c log p_c`` per example (``p`` is ``(B, C)``). Regression:
    the Gaussian NLL and differential entropy ``½ Σ_d log(2πe σ_d²)``, summed over the ``D`` outputs.
    """
    return grid_scores([posterior], val_batches, kind=kind, samples=samples, generator=generator)[0]


def grid_scores(
    posteriors: Sequence[LaplacePosterior],
    val_batches: Iterable,
    *,
    kind: str,
    samples: int,
    generator=None,
    on_examples: OnExamples | None = None,
) -> list[ValidationScores]:
    """:func:`validation_scores` of each of ``posteriors`` (one posterior under several hyperparameter
    settings), computed batch by batch; ``on_examples(k)`` after each posterior's ``k`` predictions.
    """
    nll_sums = [0.0] * len(posteriors)
    ent_sums = [0.0] * len(posteriors)
    count = 0
    for batch in val_batches:
        try:
            x, y = batch
        except (TypeError, ValueError):
            raise UserError("validation batches must be (inputs, targets) pairs") from None
        tick = _ticker(on_examples, x.shape[0])
        outs = predict_many(posteriors, x, kind, samples, generator, on_each=tick)
        for i, out in enumerate(outs):
            nll, ent = _nll_and_entropy(posteriors[i].task, out, y)
            nll_sums[i] += float(nll.sum())
            ent_sums[i] += float(ent.sum())
        count += x.shape[0]
    if count == 0:
        raise UserError("no validation data; pass at least one (inputs, targets) batch")
    return [ValidationScores(n / count, e / count) for n, e in zip(nll_sums, ent_sums)]


def _ticker(on_examples: Callable[[int], None] | None, examples: int) -> Callable[[], None]:
    """A callback that reports one batch's ``examples`` to ``on_examples`` (a no-op without one)."""
    if on_examples is None:
        return lambda: None
    return lambda: on_examples(examples)


def _nll_and_entropy(task: str, out: Tensor | tuple[Tensor, Tensor], y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example NLL of ``y`` and predictive entropy, ``(B,)`` each, in float64."""
    if task == "classification":
        p = out.double()  # type: ignore[union-attr]
        logp = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        return -logp.gather(1, y.long().reshape(-1, 1)).squeeze(1), -(p * logp).sum(1)
    mean, var = (t.double() for t in out)
    return gaussian_nll(mean, var, y), 0.5 * torch.log(2 * math.pi * math.e * var).sum(1)




def score_grid(
    posterior: LaplacePosterior,
    val_batches: Sequence,
    *,
    kind: str,
    n_grid: Sequence[float],
    tau_grid: Sequence[float],
    samples: int,
    generator=None,
    progress: Progress = no_progress,
) -> list[tuple[float, float, ValidationScores]]:
    """``(N, τ, scores)`` for every point of ``n_grid × tau_grid`` (N outer), one :func:`grid_scores` pass,
    with a progress bar counting each example once per grid point. ``val_batches``: a list of ``(x, y)``.
    """
    if not n_grid or not tau_grid:
        raise UserError("n_grid and tau_grid must not be empty")
    points = [(float(n), float(tau)) for n in n_grid for tau in tau_grid]
    variants = [posterior.with_hyperparameters(n_data=n, prior_precision=tau) for n, tau in points]
    examples = sum(int(x.shape[0]) for x, _ in val_batches)
    with progress(examples * len(points), f"tuning {kind} ({len(points)} grid points)") as advance:
        scores = grid_scores(variants, val_batches, kind=kind, samples=samples, generator=generator, on_examples=advance)
    return [(n, tau, score) for (n, tau), score in zip(points, scores)]
