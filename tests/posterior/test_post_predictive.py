"""Predictives: glm/probit function-space variance vs explicit J Σ Jᵀ, normalisation, τ → ∞ limits, dropout."""

import math

import pytest
import torch
from torch import nn

from tests.reference.curvatures import diag_curvature, kfac_curvature, random_kfac_curvature
from tests.reference.dense import dense_covariance
from tests.reference.ggn import waug_jacobian
from tests.reference.indices import to_waug
from tests.reference.models import DT, seeded_mlp
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior

TAUS = {"0": 0.5, "2": 1.5, "4": 3.0}


def _explicit_jsj(model, x, curv, n_eff, taus, mode):
    mods = [b.module for b in curv.blocks]
    j = waug_jacobian(model, x, mods)  # (B, C, P)
    cov = dense_covariance(curv, n_eff, taus, mode)
    return torch.einsum("bcp,pq,bcq->bc", j, cov, j)


def _mixed_curvature(model, data, task, modules=None):
    """Kronecker blocks for all but the last module, a diagonal block for the last one."""
    kfac = kfac_curvature(model, data, task, modules=modules)
    diag = diag_curvature(model, data, task, modules=modules)
    kfac.blocks[-1] = diag.blocks[-1]
    return kfac


BUILD = {"diag": diag_curvature, "kfac": kfac_curvature, "mixed": _mixed_curvature}


@pytest.mark.parametrize("kind", ["diag", "kfac", "mixed"])
@pytest.mark.parametrize("modules", [None, ("0", "4")])
def test_glm_regression_variance_equals_explicit_jsj(kind, modules, model, data):
    curv = BUILD[kind](model, data, "regression", modules=modules)
    taus = {b.module: TAUS[b.module] for b in curv.blocks}
    post = LaplacePosterior(curv, model, prior_precision=taus, n_data=40.0, noise_std=0.6, prior_mode="factor")
    x = data[:9]
    mean, var = post.predict(x, "glm")
    expected = _explicit_jsj(model, x, curv, 40.0 / 0.36, taus, "factor")
    with torch.no_grad():
        torch.testing.assert_close(mean, model(x))
    torch.testing.assert_close(var, expected + 0.36, rtol=1e-10, atol=1e-12)
    # Chunked over examples gives the same.
    torch.testing.assert_close(post.functional_variance(x, chunk_size=2), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["diag", "kfac"])
def test_probit_uses_explicit_jsj(kind, model, data):
    build = diag_curvature if kind == "diag" else kfac_curvature
    curv = build(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=TAUS, n_data=25.0)
    x = data[:7]
    jsj = _explicit_jsj(model, x, curv, 25.0, TAUS, "eigen")
    torch.testing.assert_close(post.functional_variance(x, chunk_size=3), jsj, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        f = model(x)
    expected = torch.softmax(f / torch.sqrt(1 + math.pi / 8 * jsj), -1)
    torch.testing.assert_close(post.predict(x, "probit"), expected)


@pytest.mark.parametrize("kind", ["mc", "glm", "probit"])
@pytest.mark.parametrize("curv_kind", ["diag", "kfac"])
def test_probabilities_normalised_and_collapse_to_map(kind, curv_kind, model, data):
    build = diag_curvature if curv_kind == "diag" else kfac_curvature
    curv = build(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=0.1)
    x = data[:8]
    probs = post.predict(x, kind, samples=30)
    assert probs.shape == (8, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(8, dtype=DT))
    map_probs = post.predict(x, "map")
    assert (probs - map_probs).abs().max() > 1e-3  # uncertainty does something at τ = 0.1
    sharp = post.with_hyperparameters(prior_precision=1e12)
    torch.testing.assert_close(sharp.predict(x, kind, samples=30), map_probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["mc", "glm"])
def test_samples_are_reused_across_batches(kind, model, data):
    post = LaplacePosterior(kfac_curvature(model, data, "classification"), model, prior_precision=0.2)
    full = post.predict(data, kind, samples=20)
    parts = torch.cat([post.predict(data[:11], kind, samples=20), post.predict(data[11:], kind, samples=20)])
    torch.testing.assert_close(parts, full, rtol=1e-12, atol=1e-14)
    gen = torch.Generator().manual_seed(5)
    other = post.predict(data, kind, samples=20, generator=gen)
    assert (other - full).abs().max() > 1e-6
    torch.testing.assert_close(post.predict(data, kind, samples=20, generator=gen), other, rtol=0, atol=0)


def test_weight_space_linearisation_matches_explicit_jacobian(model, data):
    """The generic glm path (blocks without a factored covariance): f + J δ for the posterior's own
    weight deviations equals an explicit Jacobian applied to the same deviations."""
    from uncert_cli.posterior.predictive import linearised_outputs

    curv = kfac_curvature(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=0.3)
    x = data[:5]
    f0, jd = linearised_outputs(post, x, 12, None)
    dev = post.deviations(12, None)
    d = torch.cat([to_waug(dev, b.module) for b in curv.blocks], 1)  # (S, P)
    j = waug_jacobian(model, x, [b.module for b in curv.blocks])
    with torch.no_grad():
        torch.testing.assert_close(f0, model(x))
    torch.testing.assert_close(jd, torch.einsum("bcp,sp->sbc", j, d))


def test_mc_regression_variance_matches_glm_for_linear_model():
    """For a linear model the network is its own linearisation: mc variance → exact glm variance."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).to(DT)
    x = torch.randn(25, 3, dtype=DT)
    curv = kfac_curvature(model, x, "regression")
    post = LaplacePosterior(curv, model, prior_precision=1.0, noise_std=0.5)
    mean_g, var_g = post.predict(x[:6], "glm")
    mean_m, var_m = post.predict(x[:6], "mc", samples=8000)
    torch.testing.assert_close(mean_m, mean_g, rtol=0, atol=0.05 * var_g.sqrt().max().item())
    torch.testing.assert_close(var_m - 0.25, var_g - 0.25, rtol=0.08, atol=1e-4)
    mean_map, var_map = post.predict(x[:6], "map")
    torch.testing.assert_close(var_map, torch.full_like(var_map, 0.25))


def test_dropout_predictive(data):
    model = seeded_mlp(seed=1, dropout=0.3)
    curv = kfac_curvature(model.eval(), data, "classification")
    post = LaplacePosterior(curv, model)
    model.train()
    probs = post.predict(data[:6], "dropout", samples=25)
    assert model.training  # state restored
    torch.testing.assert_close(probs.sum(1), torch.ones(6, dtype=DT))
    torch.testing.assert_close(post.predict(data[:6], "dropout", samples=25), probs, rtol=0, atol=0)
    assert (probs - post.predict(data[:6], "map")).abs().max() > 1e-4


def test_dropout_without_dropout_modules_is_user_error(model, data):
    post = LaplacePosterior(kfac_curvature(model, data, "classification"), model)
    with pytest.raises(UserError, match="no Dropout"):
        post.predict(data[:3], "dropout")


def test_prediction_errors(model, data):
    post = LaplacePosterior(kfac_curvature(model, data, "classification"), model)
    with pytest.raises(UserError, match="unknown predictive"):
        post.predict(data[:3], "laplace")
    with pytest.raises(UserError, match="samples"):
        post.predict(data[:3], "mc", samples=0)
    reg = LaplacePosterior(kfac_curvature(model, data, "regression"), model)
    with pytest.raises(UserError, match="probit"):
        reg.predict(data[:3], "probit")


@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_conv_blocks_use_row_major_reshaped_weights(mode):
    """Conv weights (O, C, kh, kw) enter W_aug as (O, C*kh*kw): glm variance equals explicit J Σ Jᵀ."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).to(DT)
    x = torch.randn(6, 2, 5, 5, dtype=DT)
    curv = random_kfac_curvature(model, ["0", "3"], "regression", n_data=20)
    taus = {"0": 0.7, "3": 2.0}
    post = LaplacePosterior(curv, model, prior_precision=taus, prior_mode=mode)
    _, var = post.predict(x, "glm")
    expected = _explicit_jsj(model, x, curv, 20.0, taus, mode)
    torch.testing.assert_close(var, expected + 1.0, rtol=1e-10, atol=1e-12)
    assert post.marginal_variance()["0.weight"].shape == (3, 2, 3, 3)
    probs_mc = post.predict(x, "mc", samples=10)[0]
    assert probs_mc.shape == (6, 2)
