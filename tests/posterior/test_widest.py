"""The widest objective on a linear-Gaussian model, where its answer is known in closed form.

For ``y = wᵀx̃ + ε`` (``x̃ = [x, 1]``, ``ε ~ N(0, σ²)``) the GGN is the exact Hessian and KFAC of a one-output
linear layer is exact, so uncert's Laplace posterior in the ``eigen`` prior form is Bayesian linear
regression: precision ``X̃ᵀX̃/σ² + τI``, predictive ``N(θ*ᵀx̃, σ² + x̃ᵀΣx̃)``. The held-out NLL and the
predictive entropy of every ``τ`` follow by hand, and with them the widest admissible ``τ``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference.curvatures import kfac_curvature
from tests.reference.models import DT
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior, tune_val_nll, tune_widest
from uncert_cli.posterior.widest import nll_limit, select_widest

SIGMA = 0.5
TAU_TRUE = 1.0
TAU_GRID = [10.0**k for k in np.arange(-3.0, 3.01, 0.25)]


def _problem(n_train: int = 8, n_val: int = 4000, dim: int = 6, seed: int = 0):
    """Weights from the prior N(0, 1/τ), few training points (the posterior matters), many held-out ones."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim + 1, generator=g, dtype=DT) / math.sqrt(TAU_TRUE)
    x_train = torch.randn(n_train, dim, generator=g, dtype=DT)
    x_val = torch.randn(n_val, dim, generator=g, dtype=DT)

    def targets(x):
        return torch.cat([x, torch.ones(len(x), 1, dtype=DT)], 1) @ w + SIGMA * torch.randn(len(x), generator=g, dtype=DT)

    y_train, y_val = targets(x_train), targets(x_val)
    # θ*: the posterior mean (ridge) at the true prior precision, as training with that weight decay gives.
    xa = torch.cat([x_train, torch.ones(n_train, 1, dtype=DT)], 1)
    theta = torch.linalg.solve(xa.T @ xa / SIGMA**2 + TAU_TRUE * torch.eye(dim + 1, dtype=DT), xa.T @ y_train / SIGMA**2)
    model = nn.Sequential(nn.Linear(dim, 1)).to(DT)  # a named module ("0") for the curvature block
    with torch.no_grad():
        model[0].weight.copy_(theta[:dim].reshape(1, dim))
        model[0].bias.copy_(theta[dim:])
    return model, xa, x_train, x_val, y_val, theta


def _closed_form(xa, x_val, y_val, theta, tau):
    """Mean held-out NLL and predictive entropy of Bayesian linear regression at prior precision ``tau``."""
    xa, xv, yv, th = (t.numpy() for t in (xa, x_val, y_val, theta))
    xv = np.c_[xv, np.ones(len(xv))]
    cov = np.linalg.inv(xa.T @ xa / SIGMA**2 + tau * np.eye(xa.shape[1]))
    var = SIGMA**2 + np.einsum("ni,ij,nj->n", xv, cov, xv)
    nll = 0.5 * (np.log(2 * np.pi * var) + (yv - xv @ th) ** 2 / var)
    return float(nll.mean()), float((0.5 * np.log(2 * np.pi * np.e * var)).mean())


@pytest.fixture(scope="module")
def linear_gaussian():
    model, xa, x_train, x_val, y_val, theta = _problem()
    curv = kfac_curvature(model, x_train, "regression")
    post = LaplacePosterior(curv, model, noise_std=SIGMA, prior_mode="eigen")
    batches = [(x_val[i : i + 1000], y_val[i : i + 1000].reshape(-1, 1)) for i in range(0, len(x_val), 1000)]
    exact = {tau: _closed_form(xa, x_val, y_val, theta, tau) for tau in TAU_GRID}
    return post, batches, exact, len(x_train)


def test_scores_match_bayesian_linear_regression(linear_gaussian):
    post, batches, exact, n = linear_gaussian
    res = tune_widest(post, batches, kind="glm", n_grid=[n], tau_grid=TAU_GRID, tolerance=0.01)
    for rec in res.history:
        nll, ent = exact[rec["prior_precision"]]
        assert rec["nll"] == pytest.approx(nll, rel=1e-9)
        assert rec["entropy"] == pytest.approx(ent, rel=1e-9)
    # The MAP predictive N(θ*ᵀx̃, σ²) (no weight uncertainty).
    x_val = torch.cat([x for x, _ in batches])
    y_val = torch.cat([y for _, y in batches]).reshape(-1)
    with torch.no_grad():
        resid = (y_val - post.model(x_val).reshape(-1)).numpy()
    map_nll = float(np.mean(0.5 * (np.log(2 * np.pi * SIGMA**2) + resid**2 / SIGMA**2)))
    assert res.map_nll == pytest.approx(map_nll, rel=1e-9)


@pytest.mark.parametrize("tolerance", [0.0, 0.002, 0.01, 0.05])
def test_choice_is_the_closed_form_widest_admissible_tau(linear_gaussian, tolerance):
    post, batches, exact, n = linear_gaussian
    res = tune_widest(post, batches, kind="glm", n_grid=[n], tau_grid=TAU_GRID, tolerance=tolerance)
    reference = min(min(v[0] for v in exact.values()), res.map_nll)
    limit = reference + tolerance * abs(reference)
    admissible = [tau for tau, (nll, _) in exact.items() if nll <= limit]
    expected = max(admissible, key=lambda tau: exact[tau][1])
    assert res.prior_precision == expected
    assert res.nll_limit == pytest.approx(limit, rel=1e-9)
    # A wider posterior (smaller τ) than the NLL optimum, never a worse NLL than allowed.
    best_tau = min(exact, key=lambda tau: exact[tau][0])
    assert res.prior_precision <= best_tau
    assert res.objective <= limit
    if tolerance == 0.0:
        by_nll = tune_val_nll(post, batches, kind="glm", n_grid=[n], tau_grid=TAU_GRID)
        assert res.prior_precision == by_nll.prior_precision


def test_neither_collapses_nor_inflates(linear_gaussian):
    """With data from the prior the held-out NLL is lowest near the true τ = 1 and rises on both sides:
    the choice lies strictly inside the grid, within two decades below the truth, and is wider than the
    MAP (higher entropy) without reaching the prior-dominated widest edge."""
    post, batches, exact, n = linear_gaussian
    res = tune_widest(post, batches, kind="glm", n_grid=[n], tau_grid=TAU_GRID)
    assert min(TAU_GRID) < res.prior_precision < max(TAU_GRID)
    best_tau = min(exact, key=lambda tau: exact[tau][0])
    assert 0.1 <= best_tau <= 10.0
    assert best_tau / 100 <= res.prior_precision <= best_tau
    chosen = next(r for r in res.history if r["prior_precision"] == res.prior_precision)
    assert chosen["entropy"] > exact[max(TAU_GRID)][1]
    assert chosen["entropy"] < exact[min(TAU_GRID)][1]


def test_select_widest_rules():
    recs = [{"nll": 1.00, "entropy": 0.1}, {"nll": 1.005, "entropy": 0.3}, {"nll": 1.02, "entropy": 0.9}]
    assert select_widest(recs, 1.0, 0.01) is recs[1]
    assert select_widest(recs, 1.0, 0.0) is recs[0]
    assert select_widest(recs, 1.0, 0.05) is recs[2]
    # Nothing admissible (every grid point worse than the MAP's 0.5): the lowest NLL, the closest to the MAP.
    assert select_widest(recs, 0.5, 0.01) is recs[0]
    # Negative regression NLLs: the limit widens by |reference|.
    assert nll_limit(-2.0, 0.1) == pytest.approx(-1.8)
    with pytest.raises(UserError, match="not finite"):
        select_widest([{"nll": math.nan, "entropy": 1.0}], 1.0, 0.01)


def test_bad_arguments_are_user_errors(linear_gaussian):
    post, batches, _, n = linear_gaussian
    with pytest.raises(UserError, match="nll_tolerance"):
        tune_widest(post, batches, kind="glm", n_grid=[n], tau_grid=[1.0], tolerance=-0.1)
    with pytest.raises(UserError, match="Laplace predictive"):
        tune_widest(post, batches, kind="map", n_grid=[n], tau_grid=[1.0])
