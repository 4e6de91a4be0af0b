"""The default tuning objective: the widest posterior that held-out data cannot tell from the best one.

Held-out NLL alone picks one ``(N, τ)`` from a curve that is nearly flat around its minimum: widening
the posterior changes the predictive only on the few ambiguous held-out examples, so many widths score
within noise of each other, and on an already calibrated MAP the arg-min drifts to the narrowest edge of
the grid (the MAP again, no OOD signal). The Laplace evidence, in contrast, never looks at predictions
and can widen the predictive well past what the data supports (issue 13: NLL × 2.4 on a calibrated MLP).

``widest`` therefore asks two questions in order (derivation in docs/design.md):

1. which grid points are *admissible*: mean held-out NLL at most ``(1 + ε)`` times the reference, the
   lower of the best grid point's and the MAP's (so the chosen predictive is never more than ``ε`` worse
   than the MAP on held-out data);
2. among those, which claims the *least certainty*: the largest mean predictive entropy on the same
   held-out inputs (maximum entropy among the predictives the data cannot reject).

Regression NLLs can be negative, so the limit is ``reference + ε·|reference|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from uncert_cli.core.errors import UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.posterior import predictives
from uncert_cli.posterior.held_out import score_grid, validation_scores
from uncert_cli.posterior.laplace import LaplacePosterior
from uncert_cli.posterior.tuning import VAL_N_FACTORS, TuneResult

# ε: relative held-out NLL a wider posterior may cost. 1% of ~0.045 nats on MNIST is ~4.5e-4 nats per
# example, about the paired standard error of an NLL difference between neighbouring grid points on
# 1,000 held-out examples (measured on the MNIST MLPs): below it the grid points are indistinguishable.
DEFAULT_NLL_TOLERANCE = 0.01
# τ in half-decades over the range of VAL_TAU_GRID (10^-2 … 10^4): the rule picks an edge of the admissible
# set, so its resolution is the grid's; on the MNIST MLP the widest admissible τ fell between two decades.
WIDEST_TAU_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-4, 9))


def nll_limit(reference: float, tolerance: float) -> float:
    """The largest admissible mean NLL: ``reference + tolerance·|reference|``."""
    return reference + tolerance * abs(reference)


def select_widest(records: Sequence[dict], reference_nll: float, tolerance: float) -> dict:
    """The record (``{"nll", "entropy", ...}``) of largest entropy among those with ``nll`` within the limit;
    ties go to the lower NLL. With none admissible, the lowest-NLL record (the closest to the MAP).
    """
    finite = [r for r in records if math.isfinite(r["nll"]) and math.isfinite(r["entropy"])]
    if not finite:
        raise UserError("validation NLL is not finite anywhere on the grid; widen the τ grid")
    limit = nll_limit(reference_nll, tolerance)
    admissible = [r for r in finite if r["nll"] <= limit]
    if not admissible:
        return min(finite, key=lambda r: r["nll"])
    return max(admissible, key=lambda r: (r["entropy"], -r["nll"]))


def check_tolerance(tolerance: float) -> float:
    if not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
        raise UserError(f"{{param}} must be a number ≥ 0 (e.g. 0.01 for 1%), got {tolerance!r}", param="nll_tolerance")
    return float(tolerance)


def tune_widest(
    posterior: LaplacePosterior,
    val_batches: Sequence,
    *,
    kind: str = "probit",
    tolerance: float = DEFAULT_NLL_TOLERANCE,
    n_grid: Sequence[float] | None = None,
    tau_grid: Sequence[float] | None = None,
    samples: int = 100,
    generator=None,
    progress: Progress = no_progress,
) -> TuneResult:
    """Grid search over ``(N, τ)`` (scalar τ) for the widest admissible posterior (module docstring).

    ``val_batches`` is a list of ``(x, y)``; ``progress`` draws the grid search's bar. ``n_grid`` defaults to that of
    :func:`tune_val_nll`, ``tau_grid`` to
    :data:`WIDEST_TAU_GRID`. The result's
    ``history`` holds ``{n_data, prior_precision, nll, entropy}`` per grid point; ``objective`` is the
    chosen point's NLL, ``map_nll`` the MAP's on the same examples, ``nll_limit`` the admissible bound.
    """
    if not predictives.get(kind).uses_laplace:
        laplace = ", ".join(predictives.kinds(lambda p: p.uses_laplace))
        raise UserError(f"the widest objective tunes a Laplace predictive ({laplace}), not '{kind}'")
    tolerance = check_tolerance(tolerance)
    n_grid = [posterior.n_data * f for f in VAL_N_FACTORS] if n_grid is None else list(n_grid)
    tau_grid = list(WIDEST_TAU_GRID) if tau_grid is None else list(tau_grid)
    scored = score_grid(posterior, val_batches, kind=kind, n_grid=n_grid, tau_grid=tau_grid, samples=samples,
                        generator=generator, progress=progress)
    map_scores = validation_scores(posterior, val_batches, kind="map", samples=1)
    history = [{"n_data": n, "prior_precision": tau, "nll": s.nll, "entropy": s.entropy} for n, tau, s in scored]
    finite = [r["nll"] for r in history if math.isfinite(r["nll"])]
    reference = min([map_scores.nll, *finite])
    chosen = select_widest(history, reference, tolerance)
    return TuneResult(
        chosen["prior_precision"], posterior.noise_std, history, chosen["n_data"], chosen["nll"],
        map_nll=map_scores.nll, nll_limit=nll_limit(reference, tolerance),
    )
