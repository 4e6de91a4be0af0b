"""Posterior operations of every structure against the explicit inverse of its structured precision."""

from __future__ import annotations

import math

import pytest
import torch

from tests.reference.cases import case
from tests.reference.dense import dense_precision
from uncert_cli.curvature.structured import compute_structured_curvature
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.posterior.precision import (
    log_det,
    marginal_variance,
    noise_shape,
    pack,
    precision_eigenvalues,
    quadratic_form,
    sample_deviation,
)
from uncert_cli.store import FactorFile, read_factor_file, write_factor_file

METHODS = ["full", "lowrank", "ekfac", "kfac-diag"]
TAU, N_EFF = 0.7, 5.0


def posterior(method: str, name: str = "mlp-cls") -> LaplacePosterior:
    c = case(name)
    curv = compute_structured_curvature(c.model, c.source(), method=method, task=c.task, rank=3)
    return LaplacePosterior(curv, c.model, prior_precision=TAU, n_data=N_EFF)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def explicit(block) -> torch.Tensor:
    """``N·C + τI`` of one block, dense, in its packed order."""
    return dense_precision(block, N_EFF, TAU)


@pytest.mark.parametrize("method", METHODS)
def test_marginals_logdet_quadratic_form_match_the_explicit_inverse(method):
    post = posterior(method)
    for spec, block in zip(post.specs, post.curvature.blocks):
        H = explicit(block)
        cov = torch.linalg.inv(H)
        prec = precision_eigenvalues(spec, TAU, N_EFF)
        var = pack(spec, marginal_variance(spec, prec)).reshape(-1)
        torch.testing.assert_close(var, torch.diagonal(cov), atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(log_det(spec, TAU, N_EFF), torch.linalg.slogdet(H)[1], atol=1e-9, rtol=1e-9)
        g = torch.randn(4, 2, H.shape[0], dtype=torch.float64)
        grads = dict(zip(spec.param_names, _unpack_flat(spec, g)))
        q = quadratic_form(spec, prec, grads, batch_dims=2)
        torch.testing.assert_close(q, torch.einsum("abp,pq,abq->ab", g, cov, g), atol=1e-12, rtol=1e-9)
        # effective parameters: Σ λ/(λ+τ) = P − τ tr(Σ)
        gamma = post.effective_params()[spec.module]
        assert math.isclose(gamma, H.shape[0] - TAU * float(torch.trace(cov)), rel_tol=1e-8)


def _unpack_flat(spec, g):
    """``(*batch, P)`` in the spec's packed order -> per-parameter tensors."""
    from uncert_cli.posterior.precision import unpack

    batch = g.shape[:-1]
    d = unpack(spec, g.reshape(*batch, *noise_shape(spec)), batch_dims=len(batch))
    return [d[n] for n in spec.param_names]


@pytest.mark.parametrize("method", METHODS)
def test_sample_covariance_matches_the_analytic_covariance(method):
    post = posterior(method)
    S = 20000
    gen = torch.Generator().manual_seed(0)
    for spec, block in zip(post.specs, post.curvature.blocks):
        cov = torch.linalg.inv(explicit(block))
        prec = precision_eigenvalues(spec, TAU, N_EFF)
        z = torch.randn((S, *noise_shape(spec)), generator=gen, dtype=torch.float64)
        dev = pack(spec, sample_deviation(spec, prec, z), batch_dims=1).reshape(S, -1)
        emp = dev.T @ dev / S
        scale = torch.sqrt(torch.outer(torch.diagonal(cov), torch.diagonal(cov)))
        # MC error of a covariance entry is about sqrt(2/S) of its scale; allow 5 of those
        assert float(((emp - cov).abs() / scale).max()) < 5 * math.sqrt(2 / S)


@pytest.mark.parametrize("method", METHODS)
def test_posterior_survives_the_factor_file(method, tmp_path):
    post = posterior(method)
    c = case("mlp-cls")
    from uncert_cli.checkpoint import ModelMeta
    from uncert_cli.store import PriorSettings

    meta = ModelMeta(arch="x:y", arch_kwargs={}, input_shape=(4,), task="classification", num_outputs=3)
    path = write_factor_file(
        tmp_path / "f.h5", post.curvature, state_dict=c.model.state_dict(), model_meta=meta, fingerprint="0",
        checkpoint_path="x", fit={"dataset": "t"}, prior=PriorSettings(),
    )
    back: FactorFile = read_factor_file(path)
    assert back.curvature.method == method
    again = LaplacePosterior(back.curvature, c.model, prior_precision=TAU, n_data=N_EFF)
    for name, v in post.marginal_variance().items():
        torch.testing.assert_close(again.marginal_variance()[name], v)
    assert math.isclose(again.log_det_precision()["total"], post.log_det_precision()["total"], rel_tol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_predictives_and_evidence_tuning_run(method):
    from uncert_cli.posterior import tune_prior_marglik

    post = posterior(method)
    c = case("mlp-cls")
    for kind in ("glm", "probit", "mc"):
        p = post.predict(c.x, kind, samples=8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(p.sum(1), torch.ones(c.x.shape[0], dtype=torch.float64))
    res = tune_prior_marglik(post, -5.0, structure="layer")
    assert all(v > 0 for v in (res.prior_precision.values() if isinstance(res.prior_precision, dict) else [res.prior_precision]))
    # the evidence uses the same log-det as the posterior
    tuned = res.apply(post)
    assert math.isfinite(tuned.log_marginal_likelihood(-5.0))
