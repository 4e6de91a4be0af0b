"""Validation-NLL grid search and the one-line UserErrors of the posterior API."""

import math

import pytest
import torch

from tests.reference.curvatures import diag_curvature, kfac_curvature
from tests.reference.models import DT, seeded_mlp
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior, tune_prior_marglik, tune_val_nll, validation_nll


def _val_batches(model, data, task):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(16, 4, generator=g, dtype=DT)
    with torch.no_grad():
        f = model(x)
    if task == "classification":
        y = torch.distributions.Categorical(logits=f * 0.3).sample()
    else:
        y = f + 0.5 * torch.randn(f.shape, generator=g, dtype=DT)
    return [(x[:9], y[:9]), (x[9:], y[9:])]


@pytest.mark.parametrize("task,kind", [("classification", "probit"), ("classification", "mc"), ("regression", "glm")])
def test_val_nll_grid_picks_the_minimum(task, kind, model, data):
    post = LaplacePosterior(kfac_curvature(model, data, task), model, noise_std=0.5 if task == "regression" else 1.0)
    val = _val_batches(model, data, task)
    res = tune_val_nll(post, val, kind=kind, n_grid=[10.0, 100.0], tau_grid=[0.1, 1.0, 10.0], samples=20)
    assert len(res.history) == 6
    best = min(res.history, key=lambda r: r["nll"])
    assert (res.n_data, res.prior_precision, res.objective) == (best["n_data"], best["prior_precision"], best["nll"])
    # Recompute one grid point independently.
    rec = res.history[4]
    direct = validation_nll(
        post.with_hyperparameters(n_data=rec["n_data"], prior_precision=rec["prior_precision"]), val, kind=kind,
        samples=20,
    )
    assert direct == pytest.approx(rec["nll"], rel=1e-12)
    tuned = res.apply(post)
    assert tuned.n_data == res.n_data and tuned.prior_precision["0"] == res.prior_precision


def test_val_nll_classification_formula(model, data):
    post = LaplacePosterior(diag_curvature(model, data, "classification"), model)
    val = _val_batches(model, data, "classification")
    nll = validation_nll(post, val, kind="map", samples=1)
    x = torch.cat([b[0] for b in val])
    y = torch.cat([b[1] for b in val])
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert nll == pytest.approx(expected, rel=1e-12)


def test_user_errors(model, data):
    curv = kfac_curvature(model, data, "classification")
    with pytest.raises(UserError, match="unknown module"):
        LaplacePosterior(curv, model, prior_precision={"0": 1.0, "2": 1.0, "4": 1.0, "fc9": 1.0})
    with pytest.raises(UserError, match="no prior precision for module"):
        LaplacePosterior(curv, model, prior_precision={"0": 1.0})
    with pytest.raises(UserError, match="prior_precision must be a positive"):
        LaplacePosterior(curv, model, prior_precision=-1.0)
    with pytest.raises(UserError, match="prior mode"):
        LaplacePosterior(curv, model, prior_mode="kron")
    with pytest.raises(UserError, match="n_data"):
        LaplacePosterior(curv, model, n_data=0)
    with pytest.raises(UserError, match="regression only"):
        LaplacePosterior(curv, model, noise_std=0.5)
    with pytest.raises(UserError, match="shape"):
        LaplacePosterior(curv, seeded_mlp(sizes=(4, 7, 5, 3)))
    post = LaplacePosterior(curv, model)
    with pytest.raises(UserError, match="regression"):
        tune_prior_marglik(post, -10.0, tune_noise=True, n_targets=30)
    with pytest.raises(UserError, match="structure"):
        tune_prior_marglik(post, -10.0, structure="block")
    with pytest.raises(UserError, match="finite"):
        post.log_marginal_likelihood(math.nan)
    reg = LaplacePosterior(kfac_curvature(model, data, "regression"), model)
    with pytest.raises(UserError, match="n_targets"):
        tune_prior_marglik(reg, -10.0, tune_noise=True)
