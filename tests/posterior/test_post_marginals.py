"""Marginal variances, log-determinants, entropies and effective parameters vs dense references."""

import math

import pytest
import torch

from tests.reference.curvatures import diag_curvature, kfac_curvature, kfac_factors, linear_modules
from tests.reference.dense import dense_covariance, dense_precision
from tests.reference.ggn import waug_ggn
from tests.reference.indices import to_waug
from tests.reference.models import DT
from uncert_cli.posterior import LaplacePosterior

BUILDERS = {"diag": diag_curvature, "kfac": kfac_curvature}
TAUS = {"0": 0.3, "2": 2.0, "4": 5.0}


def _posterior(kind, task, mode, model, data):
    curv = BUILDERS[kind](model, data, task)
    noise = 0.7 if task == "regression" else 1.0
    post = LaplacePosterior(curv, model, prior_precision=TAUS, n_data=50.0, prior_mode=mode, noise_std=noise)
    return curv, post


def test_reference_kfac_is_exact_per_example(model, data):
    """Self-check of the test reference: for one example, G ⊗ A is the exact GGN block."""
    mods = [n for n, _ in linear_modules(model)]
    x = data[:1]
    ggn = waug_ggn(model, x, "classification", mods)
    facs = kfac_factors(model, x, "classification", mods)
    start = 0
    for m in mods:
        A, G = facs[m]
        p = A.shape[0] * G.shape[0]
        torch.testing.assert_close(torch.kron(G, A), ggn[start : start + p, start : start + p])
        start += p


@pytest.mark.parametrize("kind", ["diag", "kfac"])
@pytest.mark.parametrize("mode", ["eigen", "factor"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_marginal_variance_is_diagonal_of_dense_inverse(kind, mode, task, model, data):
    curv, post = _posterior(kind, task, mode, model, data)
    n_eff = 50.0 / (0.7**2 if task == "regression" else 1.0)
    var = post.marginal_variance()
    params = dict(model.named_parameters())
    assert set(var) == set(params)
    for name, v in var.items():
        assert v.shape == params[name].shape
    for block in curv.blocks:
        cov = torch.linalg.inv(dense_precision(block, n_eff, TAUS[block.module], mode, waug=True))
        torch.testing.assert_close(to_waug(var, block.module), cov.diagonal(), rtol=1e-10, atol=1e-13)
    pv = post.prior_variance()
    assert pv["2.weight"] == pytest.approx(1 / 2.0) and pv["4.bias"] == pytest.approx(1 / 5.0)


@pytest.mark.parametrize("kind", ["diag", "kfac"])
@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_logdet_entropy_effective_params_match_dense(kind, mode, model, data):
    curv, post = _posterior(kind, "classification", mode, model, data)
    lds, ents, gammas = post.log_det_precision(), post.entropy(), post.effective_params()
    for block in curv.blocks:
        tau = TAUS[block.module]
        prec = dense_precision(block, 50.0, tau, mode, waug=True)
        ld = torch.linalg.slogdet(prec)[1].item()
        p = prec.shape[0]
        assert lds[block.module] == pytest.approx(ld, rel=1e-10)
        assert ents[block.module] == pytest.approx(0.5 * (p * (1 + math.log(2 * math.pi)) - ld), rel=1e-10)
        lam = torch.linalg.eigvalsh(prec - tau * torch.eye(p, dtype=DT)).clamp_min(0)
        assert gammas[block.module] == pytest.approx(float((lam / (lam + tau)).sum()), rel=1e-8)
    assert lds["total"] == pytest.approx(sum(lds[b.module] for b in curv.blocks))
    assert 0 < gammas["total"] < post.num_params


def test_eigen_mode_is_exact_structured_precision(model, data):
    """eigen mode: covariance of the KFAC posterior is inv(N G⊗A + τI) exactly (full block, not just diagonal)."""
    curv, post = _posterior("kfac", "classification", "eigen", model, data)
    cov = dense_covariance(curv, 50.0, TAUS, "eigen")
    # Sampling-free check of the full covariance through the quadratic form gᵀΣg for random g.
    g = torch.randn(5, cov.shape[0], dtype=DT)
    from uncert_cli.posterior.precision import quadratic_form, unpack

    start, total = 0, torch.zeros(5, dtype=DT)
    for spec, eigs in zip(post.specs, post.block_precisions):
        gs = g[:, start : start + spec.num_params].reshape(5, spec.out_dim, spec.in_dim)
        total += quadratic_form(spec, eigs, unpack(spec, gs, batch_dims=1), batch_dims=1)
        start += spec.num_params
    torch.testing.assert_close(total, torch.einsum("bp,pq,bq->b", g, cov, g))


def test_uncovered_parameters_are_ignored(model, data):
    curv = kfac_curvature(model, data, "classification", modules=("0", "4"))
    post = LaplacePosterior(curv, model)
    assert set(post.marginal_variance()) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    assert post.num_params == 30 + 18
