"""Hyperparameter tuning of a Laplace posterior (library only).

* :func:`tune_prior_marglik` maximises the Laplace evidence (MacKay 1992; Immer et al. 2021; see
  ``posterior.marglik``) over ``log τ`` (one shared value, or one per block) and optionally
  ``log σ``. The objective is exact for the stored block structure: its log-determinants come in
  closed form from the precomputed eigenvalues, so each evaluation costs ``O(#eigenvalues)`` and is
  differentiated by autograd. A coarse grid over a shared ``log τ`` picks the start, then L-BFGS
  (strong Wolfe line search) converges.
* :func:`tune_val_nll` grid-searches ``(N, τ)`` for the lowest validation negative log-likelihood
  (Ritter et al. 2018, §3.4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import PriorStructure
from uncert_cli.posterior import marglik as _marglik
from uncert_cli.posterior import predictives
from uncert_cli.posterior.held_out import grid_scores, score_grid
from uncert_cli.posterior.laplace import LaplacePosterior
from uncert_cli.posterior.structures import Structure as BlockStructure

_INIT_GRID = torch.logspace(-6, 6, 49, dtype=torch.float64)


@dataclass
class TuneResult:
    """Chosen hyperparameters. ``prior_precision`` is a float (scalar) or ``{module: τ}`` (layer)."""

    prior_precision: float | dict[str, float]
    noise_std: float
    history: list[dict] = field(default_factory=list)
    n_data: float | None = None
    objective: float | None = None  # final log evidence (marglik) or validation NLL (val_nll, widest)
    map_nll: float | None = None  # widest: the MAP's mean NLL on the same held-out examples
    nll_limit: float | None = None  # widest: the largest admissible mean NLL

    def apply(self, posterior: LaplacePosterior) -> LaplacePosterior:
        """``posterior`` with the tuned hyperparameters."""
        kwargs = {"prior_precision": self.prior_precision, "noise_std": self.noise_std}
        if self.n_data is not None:
            kwargs["n_data"] = self.n_data
        return posterior.with_hyperparameters(**kwargs)


def tune_prior_marglik(
    posterior: LaplacePosterior,
    log_likelihood: float,
    *,
    structure: PriorStructure | str = PriorStructure.scalar,
    tune_noise: bool = False,
    n_targets: int | None = None,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> TuneResult:
    """Maximise the Laplace log evidence over ``τ`` (and ``σ`` if ``tune_noise``), θ* held fixed.

    Args:
        posterior: the Laplace posterior whose hyperparameters are tuned (left unchanged).
        log_likelihood: ``Σ_n log p(y_n | x_n, θ*)`` at ``posterior.noise_std`` (with all constants).
        structure: ``"scalar"`` (one ``τ`` for all blocks) or ``"layer"`` (one per block).
        tune_noise: regression only; also optimise ``σ``. The log-likelihood at any ``σ`` follows from
            the Gaussian form ``−(n_targets/2) log(2πσ²) − RSS/(2σ²)``, so ``n_targets`` (number of scalar
            targets, examples × outputs) is required.
        n_targets: see ``tune_noise``.
        max_iter: the most L-BFGS iterations.
        tol: the gradient tolerance at which L-BFGS stops.
    """
    structure = PriorStructure.parse(structure, "structure", label="prior structure")
    if not math.isfinite(log_likelihood):
        raise UserError(f"log_likelihood must be a finite number, got {log_likelihood!r}")
    rss = None
    if tune_noise:
        if posterior.task != "regression":
            raise UserError("noise_std can only be tuned for regression; drop tune_noise")
        if n_targets is None or int(n_targets) < 1:
            raise UserError("tuning noise_std needs n_targets (number of examples × outputs); pass n_targets")
        rss = _marglik.residual_sum_squares(log_likelihood, int(n_targets), posterior.noise_std)
        if rss <= 0:
            raise UserError("log_likelihood is too high for a Gaussian with this n_targets; check both values")

    specs, modules = posterior.specs, posterior.modules
    sq = [torch.tensor(v, dtype=torch.float64) for v in posterior.map_sq_norms]
    specs64 = [_to_float64(s) for s in specs]
    history: list[dict] = []
    n_tau = 1 if structure == "scalar" else len(specs)

    def objective(log_taus: Tensor, log_sigma: Tensor | None) -> Tensor:
        taus = log_taus.exp()
        ll: Tensor | float
        if log_sigma is None:
            ll, n_eff = torch.tensor(float(log_likelihood), dtype=torch.float64), posterior.n_eff
        else:
            assert rss is not None and n_targets is not None  # checked above when tune_noise
            sigma = log_sigma.exp()
            ll = _marglik.gaussian_log_likelihood(rss, int(n_targets), sigma)
            n_eff = posterior.n_data / sigma**2
        tau_list = [taus[0]] * len(specs) if structure == "scalar" else list(taus)
        # A tensor: the log evidence of tensors that carry the optimiser's gradients.
        return cast(Tensor, _marglik.log_marginal_likelihood(ll, specs64, sq, tau_list, n_eff, posterior.prior_mode))

    # Start: best shared τ on a coarse log grid (at the current σ).
    sigma0 = torch.tensor(math.log(posterior.noise_std), dtype=torch.float64) if tune_noise else None
    with torch.no_grad():
        grid_vals = [float(objective(torch.log(t).expand(n_tau), sigma0)) for t in _INIT_GRID]
    best = int(torch.tensor(grid_vals).nan_to_num(-math.inf).argmax())
    log_taus = torch.full((n_tau,), float(torch.log(_INIT_GRID[best])), dtype=torch.float64, requires_grad=True)
    variables = [log_taus]
    log_sigma = None
    if tune_noise:
        log_sigma = torch.tensor(math.log(posterior.noise_std), dtype=torch.float64, requires_grad=True)
        variables.append(log_sigma)

    opt = torch.optim.LBFGS(
        variables, lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        val = objective(log_taus, log_sigma)
        loss = -val
        loss.backward()
        history.append(_record(len(history), float(val.detach()), log_taus, log_sigma, posterior, modules, structure))
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(objective(log_taus, log_sigma))
    rec = _record(len(history), final, log_taus, log_sigma, posterior, modules, structure)
    history.append(rec)
    return TuneResult(rec["prior_precision"], rec["noise_std"], history, posterior.n_data, final)


def _record(step, value, log_taus, log_sigma, posterior, modules, structure) -> dict:
    taus = [float(v) for v in log_taus.detach().exp()]
    prior = taus[0] if structure == "scalar" else dict(zip(modules, taus))
    noise = float(log_sigma.detach().exp()) if log_sigma is not None else posterior.noise_std
    return {"step": step, "log_marglik": value, "prior_precision": prior, "noise_std": noise}


def _to_float64(spec: BlockStructure) -> BlockStructure:
    return spec.to_float64()


def validation_nll(
    posterior: LaplacePosterior, val_batches: Iterable, *, kind: str, samples: int, generator=None
) -> float:
    """Mean negative log predictive density over ``(x, y)`` batches.

    Classification: ``−log p(y)`` with ``y`` integer labels. Regression: Gaussian NLL of ``y`` (shaped like
    the mean) under the predictive mean and variance, summed over outputs.
    """
    return grid_scores([posterior], val_batches, kind=kind, samples=samples, generator=generator)[0].nll


# The (N, τ) grid of the held-out-NLL search, shared by `uncert tune --objective val-nll` and the
# tuning that `uncert ood` / `attack` do: N over these multiples of the fitted count (Ritter et al.
# §3.4 treat N as a hyperparameter), τ over 10^-2 … 10^4. Both scale the precision up, i.e. shrink
# the posterior: Ritter et al. needed exactly that regularisation to keep accuracy.
VAL_N_FACTORS: tuple[float, ...] = (1.0, 10.0, 100.0)
VAL_TAU_GRID: tuple[float, ...] = tuple(10.0**k for k in range(-2, 5))


def grid_edges(result: TuneResult) -> list[str]:
    """Which searched hyperparameters ended on an edge of their grid (``"n_data"``, ``"prior_precision"``):
    the optimum may lie beyond it.
    """
    edges = []
    for key in ("n_data", "prior_precision"):
        values = sorted({float(r[key]) for r in result.history if r.get(key) is not None})
        best = result.n_data if key == "n_data" else result.prior_precision
        if len(values) > 1 and isinstance(best, (int, float)) and float(best) in (values[0], values[-1]):
            edges.append(key)
    return edges


def tune_val_nll(
    posterior: LaplacePosterior,
    val_batches: Sequence,
    *,
    kind: str = "glm",
    n_grid: Sequence[float] | None = None,
    tau_grid: Sequence[float] | None = None,
    samples: int = 100,
    generator=None,
    progress: Progress = no_progress,
) -> TuneResult:
    """Grid search over ``(N, τ)`` (scalar τ) minimising the validation NLL (Ritter et al. 2018, §3.4).

    ``val_batches`` is a list of ``(x, y)``; ``n_grid`` defaults to
    :data:`VAL_N_FACTORS` × the current ``n_data``, ``tau_grid`` to :data:`VAL_TAU_GRID`. Sampled
    predictives reuse the same normal draws for every grid point (common random numbers); ``progress`` draws
    the search's bar.
    """
    predictives.get(kind)
    n_grid = [posterior.n_data * f for f in VAL_N_FACTORS] if n_grid is None else list(n_grid)
    tau_grid = list(VAL_TAU_GRID) if tau_grid is None else list(tau_grid)
    scored = score_grid(posterior, val_batches, kind=kind, n_grid=n_grid, tau_grid=tau_grid, samples=samples,
                        generator=generator, progress=progress)
    history: list[dict] = []
    best: dict | None = None
    for n, tau, score in scored:
        rec = {"n_data": n, "prior_precision": tau, "nll": score.nll}
        history.append(rec)
        if math.isfinite(score.nll) and (best is None or score.nll < best["nll"]):
            best = rec
    if best is None:
        raise UserError("validation NLL is not finite anywhere on the grid; widen tau_grid")
    return TuneResult(best["prior_precision"], posterior.noise_std, history, best["n_data"], best["nll"])
