"""Per-layer statistics against dense float64 computations on a hand-built posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.reference.small_posterior import dense_entropy, dense_gamma, dense_variances, small
from uncert_cli.analysis import BARELY_IDENTIFIED_RATIO, analyse_posterior
from uncert_cli.posterior import LaplacePosterior


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_layer_stats_match_dense_inverse(tau: float) -> None:
    s = small()
    post = LaplacePosterior(s.curvature, s.model, prior_precision=tau)
    report = analyse_posterior(post, (1, 2, 2))
    var = dense_variances(s, tau)
    gamma, entropy = dense_gamma(s, tau), dense_entropy(s, tau)
    params = dict(s.model.named_parameters())
    total = sum(v.sum() for v in var.values())
    assert [layer.name for layer in report.layers] == ["fc1", "fc2"]
    for layer, names in zip(report.layers, [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")]):
        v = np.concatenate([var[n].reshape(-1) for n in names])
        mu = np.concatenate([params[n].detach().numpy().reshape(-1) for n in names])
        std, ratio = np.sqrt(v), v * tau
        assert layer.params == v.size
        assert layer.variance_share == pytest.approx(v.sum() / total, rel=1e-9)
        assert layer.variance_ratio == pytest.approx(ratio.mean(), rel=1e-9)
        assert layer.barely_identified_fraction == pytest.approx(np.mean(ratio > BARELY_IDENTIFIED_RATIO))
        assert layer.posterior_std_mean == pytest.approx(std.mean(), rel=1e-9)
        assert layer.posterior_std_max == pytest.approx(std.max(), rel=1e-9)
        # torch's median is the lower middle value for even counts
        assert layer.posterior_std_median == pytest.approx(np.sort(std)[(std.size - 1) // 2], rel=1e-9)
        rel = np.sort(std / np.abs(mu))
        assert layer.relative_std_median == pytest.approx(rel[(rel.size - 1) // 2], rel=1e-9)
        assert layer.effective_params == pytest.approx(gamma[layer.name], rel=1e-6)
        assert layer.entropy_per_param == pytest.approx(entropy[layer.name] / v.size, rel=1e-9)
        assert layer.prior_precision == tau
    assert sum(layer.variance_share for layer in report.layers) == pytest.approx(1.0)
    assert report.effective_params == pytest.approx(sum(gamma.values()), rel=1e-6)


def test_zero_curvature_weights_are_barely_identified_and_sit_at_the_prior() -> None:
    s = small()
    post = LaplacePosterior(s.curvature, s.model, prior_precision=2.0)
    report = analyse_posterior(post)
    zero = int((s.d2["fc2.weight"] == 0).sum())
    assert zero > 0
    fc2 = report.layers[1]
    assert fc2.posterior_std_max == pytest.approx(1 / math.sqrt(2.0))
    assert fc2.barely_identified_fraction >= zero / fc2.params


def test_verdict_names_the_layer_with_most_variance() -> None:
    s = small()
    report = analyse_posterior(LaplacePosterior(s.curvature, s.model, prior_precision=1.0))
    top = max(report.layers, key=lambda layer: layer.variance_share)
    assert report.verdict.top_layer == top.name
    assert f"{top.variance_share:.0%} of the posterior variance sits in layer {top.name}" in report.verdict.text
    assert f"{top.barely_identified_fraction:.0%} of its weights are barely identified" in report.verdict.text


def test_first_layer_map_has_the_input_shape_and_averages_over_outputs() -> None:
    s = small()
    post = LaplacePosterior(s.curvature, s.model, prior_precision=1.0)
    report = analyse_posterior(post, (1, 2, 2))
    var = dense_variances(s, 1.0)
    assert report.first_layer is not None and report.first_layer.kind == "pixels"
    expected = np.sqrt(var["fc1.weight"]).mean(axis=0).reshape(1, 2, 2)
    np.testing.assert_allclose(report.first_layer.values.numpy(), expected, rtol=1e-9)
    detail = report.details[0]
    np.testing.assert_allclose(detail.sigma_map.numpy(), np.sqrt(var["fc1.weight"]), rtol=1e-9)
    assert detail.input_eigenvalues.shape == (5,) and detail.output_eigenvalues.shape == (3,)
    assert report.details[1].input_eigenvalues is None


def test_conv_first_layer_gives_a_kernel_map() -> None:
    from uncert_cli.curvature.blocks import Curvature, KroneckerBlock

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten()).double()
    g = torch.Generator().manual_seed(1)
    a = torch.randn(19, 19, generator=g, dtype=torch.float64)
    o = torch.randn(3, 3, generator=g, dtype=torch.float64)
    block = KroneckerBlock("0", ("0.weight", "0.bias"), ((3, 2, 3, 3), (3,)), a @ a.T / 19, o @ o.T / 3)
    curv = Curvature([block], n_data=10, task="classification", method="kfac", fisher_type="exact")
    report = analyse_posterior(LaplacePosterior(curv, conv, prior_precision=1.0), (2, 5, 5))
    assert report.layers[0].kind == "conv"
    assert report.details[0].sigma_map.shape == (3, 3, 3)  # per output channel, mean over input channels
    assert report.first_layer.kind == "kernel" and report.first_layer.values.shape == (2, 3, 3)
