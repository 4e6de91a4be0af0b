"""Laplace evidence: closed form for Bayesian linear regression, tuning vs brute-force grids."""

import math

import pytest
import torch
from torch import nn

from tests.reference.curvatures import kfac_curvature
from tests.reference.models import DT
from uncert_cli.posterior import LaplacePosterior, tune_prior_marglik
from uncert_cli.posterior.marglik import gaussian_log_likelihood

N, D_IN, D_OUT = 30, 3, 2
SIGMA, TAU0 = 0.5, 2.0


def _mvn_logpdf(y, cov):
    L = torch.linalg.cholesky(cov)
    alpha = torch.cholesky_solve(y.unsqueeze(1), L).squeeze(1)
    return -0.5 * (y @ alpha) - torch.log(L.diagonal()).sum() - 0.5 * len(y) * math.log(2 * math.pi)


@pytest.fixture
def linreg():
    """A Linear model at the exact MAP of Bayesian linear regression with prior N(0, I/τ0)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, D_IN, generator=g, dtype=DT)
    w_true = torch.randn(D_OUT, D_IN + 1, generator=g, dtype=DT)
    xa = torch.cat([x, torch.ones(N, 1, dtype=DT)], 1)
    y = xa @ w_true.T + SIGMA * torch.randn(N, D_OUT, generator=g, dtype=DT)
    prec = xa.T @ xa / SIGMA**2 + TAU0 * torch.eye(D_IN + 1, dtype=DT)
    w_map = torch.linalg.solve(prec, xa.T @ y / SIGMA**2).T  # (D_OUT, D_IN + 1)
    model = nn.Linear(D_IN, D_OUT).to(DT)
    with torch.no_grad():
        model.weight.copy_(w_map[:, :D_IN])
        model.bias.copy_(w_map[:, D_IN])
    rss = float((y - xa @ w_map.T).square().sum())
    return model, x, xa, y, rss


def _ll(rss, sigma):
    return gaussian_log_likelihood(rss, N * D_OUT, sigma)


def test_linear_regression_evidence_is_exact(linreg):
    model, x, xa, y, rss = linreg
    curv = kfac_curvature(model, x, "regression")  # G = I, A = XᵀX/N: G ⊗ A is the exact GGN
    assert curv.blocks[0].module == "" and curv.blocks[0].param_names == ("weight", "bias")
    post = LaplacePosterior(curv, model, prior_precision=TAU0, noise_std=SIGMA)
    evidence = post.log_marginal_likelihood(_ll(rss, SIGMA))
    cov = SIGMA**2 * torch.eye(N, dtype=DT) + xa @ xa.T / TAU0
    exact = sum(float(_mvn_logpdf(y[:, d], cov)) for d in range(D_OUT))
    assert evidence == pytest.approx(exact, rel=1e-10, abs=1e-9)


def test_scalar_marglik_optimum_matches_grid(linreg):
    model, x, _, _, rss = linreg
    post = LaplacePosterior(kfac_curvature(model, x, "regression"), model, prior_precision=TAU0, noise_std=SIGMA)
    ll = _ll(rss, SIGMA)
    res = tune_prior_marglik(post, ll, structure="scalar")
    grid = torch.logspace(-3, 3, 1201, dtype=DT)
    vals = torch.tensor([post.with_hyperparameters(prior_precision=float(t)).log_marginal_likelihood(ll) for t in grid])
    best = grid[vals.argmax()]
    assert abs(math.log10(res.prior_precision) - math.log10(best)) <= 0.006
    assert res.objective >= vals.max() - 1e-9
    assert res.history and res.history[-1]["prior_precision"] == res.prior_precision
    # MacKay's fixed point holds at the optimum: τ ||θ*||² = γ.
    tuned = res.apply(post)
    sq = sum(float(p.square().sum()) for p in model.parameters())
    assert res.prior_precision * sq == pytest.approx(tuned.effective_params()["total"], rel=1e-6)


@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_layerwise_marglik_optimum_matches_coordinate_grid(mode, model, data):
    curv = kfac_curvature(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_mode=mode)
    ll = -21.5  # constant in τ
    res = tune_prior_marglik(post, ll, structure="layer")
    taus = res.prior_precision
    assert set(taus) == {"0", "2", "4"}
    best = post.with_hyperparameters(prior_precision=taus).log_marginal_likelihood(ll)
    assert res.objective == pytest.approx(best, rel=1e-12)
    grid = torch.logspace(-3, 4, 701, dtype=DT)
    for m in taus:  # the evidence separates over blocks when N and σ are fixed
        vals = torch.tensor(
            [post.with_hyperparameters(prior_precision={**taus, m: float(t)}).log_marginal_likelihood(ll) for t in grid]
        )
        assert abs(math.log10(taus[m]) - math.log10(grid[vals.argmax()])) <= 0.006
        assert best >= vals.max() - 1e-9
    if mode == "eigen":
        gammas = res.apply(post).effective_params()
        for m, p in [("0", ("0.weight", "0.bias")), ("2", ("2.weight", "2.bias")), ("4", ("4.weight", "4.bias"))]:
            sq = sum(float(dict(model.named_parameters())[n].square().sum()) for n in p)
            assert taus[m] * sq == pytest.approx(gammas[m], rel=1e-5)
    scalar = tune_prior_marglik(post, ll, structure="scalar")
    assert res.objective >= scalar.objective - 1e-9


def test_noise_and_prior_optimum_matches_2d_grid(linreg):
    model, x, _, _, rss = linreg
    post = LaplacePosterior(kfac_curvature(model, x, "regression"), model, prior_precision=TAU0, noise_std=SIGMA)
    res = tune_prior_marglik(post, _ll(rss, SIGMA), structure="scalar", tune_noise=True, n_targets=N * D_OUT)
    taus = torch.logspace(-2, 2, 161, dtype=DT)
    sigmas = torch.logspace(-1.5, 0.5, 161, dtype=DT)
    vals = torch.tensor(
        [
            [
                post.with_hyperparameters(prior_precision=float(t), noise_std=float(s)).log_marginal_likelihood(
                    _ll(rss, float(s))
                )
                for s in sigmas
            ]
            for t in taus
        ]
    )
    i, j = divmod(int(vals.argmax()), len(sigmas))
    assert abs(math.log10(res.prior_precision) - math.log10(taus[i])) <= 0.026
    assert abs(math.log10(res.noise_std) - math.log10(sigmas[j])) <= 0.013
    assert res.objective >= vals.max() - 1e-9
    tuned = res.apply(post)
    assert tuned.noise_std == res.noise_std
    assert tuned.log_marginal_likelihood(_ll(rss, res.noise_std)) == pytest.approx(res.objective, rel=1e-10)


def test_with_hyperparameters_reuses_eigendecompositions(model, data):
    curv = kfac_curvature(model, data, "regression")
    post = LaplacePosterior(curv, model, prior_precision=1.0)
    eig = post.kronecker_eigens()
    assert all(eig[b.module] is b._eigen for b in curv.blocks)  # no copies when dtype/device already match
    other = post.with_hyperparameters(prior_precision={"*": 3.0, "2": 0.5}, n_data=77.0, noise_std=0.3,
                                      prior_mode="factor")
    for m, e in other.kronecker_eigens().items():
        assert e is eig[m]
    assert other.prior_precision == {"0": 3.0, "2": 0.5, "4": 3.0}
    fresh = LaplacePosterior(curv, model, prior_precision={"0": 3.0, "2": 0.5, "4": 3.0}, n_data=77.0,
                             noise_std=0.3, prior_mode="factor")
    for k, v in fresh.marginal_variance().items():
        torch.testing.assert_close(other.marginal_variance()[k], v, rtol=0, atol=0)
    assert other.log_det_precision() == fresh.log_det_precision()
    assert post.n_data == 30 and post.noise_std == 1.0  # original untouched
