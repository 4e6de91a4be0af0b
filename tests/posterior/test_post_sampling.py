"""Posterior samples: empirical moments vs the analytic covariance (diag and KFAC)."""

import pytest
import torch

from tests.reference.curvatures import diag_curvature, kfac_curvature
from tests.reference.dense import dense_covariance
from tests.reference.indices import to_waug
from uncert_cli.posterior import LaplacePosterior

N_SAMPLES = 20_000
TAUS = {"0": 0.5, "2": 1.5, "4": 3.0}


@pytest.mark.parametrize(
    "kind,mode", [("diag", "eigen"), ("kfac", "eigen"), ("kfac", "factor")]
)
def test_empirical_covariance_matches_analytic(kind, mode, model, data):
    build = diag_curvature if kind == "diag" else kfac_curvature
    curv = build(model, data, "regression")
    post = LaplacePosterior(curv, model, prior_precision=TAUS, n_data=40.0, prior_mode=mode, noise_std=0.8)
    samples = post.sample(N_SAMPLES, generator=torch.Generator().manual_seed(3))
    params = dict(model.named_parameters())
    for name, s in samples.items():
        assert s.shape == (N_SAMPLES, *params[name].shape)
    theta = torch.cat([to_waug(samples, b.module) for b in curv.blocks], 1)  # (S, P)
    mean = torch.cat([to_waug(dict(model.named_parameters()), b.module).detach() for b in curv.blocks])
    cov = dense_covariance(curv, 40.0 / 0.8**2, TAUS, mode)
    sd = cov.diagonal().sqrt()
    dev = theta - mean
    # Mean: standardised error of the sample mean ~ N(0, 1/S).
    assert (dev.mean(0) / sd).abs().max() < 5 / N_SAMPLES**0.5
    # Covariance, standardised by sd_i sd_j: each entry has MC std <= sqrt(2/S) ~ 0.01.
    emp = dev.T @ dev / N_SAMPLES
    err = (emp - cov) / torch.outer(sd, sd)
    assert err.abs().max() < 0.06
    # Off-diagonal blocks (between modules) are uncorrelated.
    if kind == "kfac":
        inner = cov.abs() > 0
        assert err[~inner].abs().max() < 0.06


def test_sampling_is_reproducible_and_batched(model, data):
    post = LaplacePosterior(kfac_curvature(model, data, "classification"), model)
    a = post.sample(7, generator=torch.Generator().manual_seed(0))
    b = post.sample(7, generator=torch.Generator().manual_seed(0))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    singles = list(post.iter_samples(3, generator=torch.Generator().manual_seed(0)))
    assert len(singles) == 3 and singles[0]["0.weight"].shape == (6, 4)


def test_uncovered_parameters_stay_at_map(model, data):
    curv = kfac_curvature(model, data, "classification", modules=("0",))
    post = LaplacePosterior(curv, model)
    s = post.sample(4)
    assert set(s) == {"0.weight", "0.bias"}
