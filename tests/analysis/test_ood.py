"""OOD analysis and attacks on a small trained digits MLP (real curvature, real posterior, no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uncert_cli.analysis import ood
from uncert_cli.analysis.attack import AttackedPredictive, targeted_attack, untargeted_attack
from uncert_cli.curvature import compute_curvature
from uncert_cli.data import adapt_to_model, iter_batches, load_dataset
from uncert_cli.errors import UserError
from uncert_cli.models import MLP
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.posterior.predictive import linearised_outputs


@pytest.fixture(scope="module")
def digits():
    train = adapt_to_model(load_dataset("digits", split="train"), (64,), num_outputs=10)
    test = adapt_to_model(load_dataset("digits", split="test"), (64,), num_outputs=10)
    return train, test


@pytest.fixture(scope="module")
def trained(digits):
    """A digits MLP trained to ~95% test accuracy, and its KFAC curvature."""
    train, _ = digits
    torch.manual_seed(0)
    model = MLP(64, [32], 10, dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = train.inputs, train.targets
    for _ in range(150):  # full batch: deterministic and quick
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    curvature = compute_curvature(model, iter_batches(train, 256), method="kfac")
    return model, curvature


def _posterior(trained, **kwargs) -> LaplacePosterior:
    model, curvature = trained
    return LaplacePosterior(curvature, model, **kwargs)


def test_predictions_do_not_depend_on_batching(trained, digits) -> None:
    # Weight samples are drawn once and reused: batch size must not change a sampled predictive.
    post = _posterior(trained)
    _, test = digits
    a = ood.predict_probs(post, test, "mc", samples=8, batch_size=50)
    b = ood.predict_probs(post, test, "mc", samples=8, batch_size=1000)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)


def test_tuned_default_keeps_map_accuracy(trained, digits) -> None:
    # An untuned sampled posterior at a weak prior can collapse (Ritter et al. regularised for this);
    # the held-out tuning that `uncert ood` runs by default must keep the MAP's accuracy.
    _, test = digits
    post = _posterior(trained, prior_precision=1e-3)
    val, evaluation = ood.split_validation(test, 150)
    assert len(val) == 150 and len(val) + len(evaluation) == len(test)
    tuned, hp = ood.tune_on_validation(post, val, "glm", samples=10, batch_size=500, tau_grid=(1e-2, 1.0, 1e2))
    assert hp.source == "tuned" and hp.prior_mode == "factor" and len(hp.grid) == 9
    map_result = ood.evaluate_predictive(post, "map", evaluation, {}, samples=1, batch_size=500)
    glm_result = ood.evaluate_predictive(tuned, "glm", evaluation, {}, samples=20, batch_size=500, hyperparameters=hp)
    acc_map = map_result.in_distribution.accuracy
    assert acc_map > 0.9
    assert abs(glm_result.in_distribution.accuracy - acc_map) <= 0.02


def test_ood_metrics_on_noise(trained, digits) -> None:
    _, test = digits
    gen = torch.Generator().manual_seed(0)
    noise = adapt_to_model(
        load_dataset("digits", split="test"), (64,), num_outputs=10
    )
    noise.inputs = torch.rand(noise.inputs.shape, generator=gen) * 16  # far outside the [0, 1] pixel range
    post = _posterior(trained, prior_precision=1.0)
    result = ood.evaluate_predictive(post, "glm", test, {"noise": noise}, samples=10, batch_size=500)
    o = result.ood["noise"]
    assert o.n == len(noise)
    for value in (o.entropy.auroc, o.entropy.aupr, o.entropy.fpr_at_95_tpr, o.max_prob.auroc):
        assert 0.0 <= value <= 1.0
    assert o.entropy.auroc > 0.5
    assert result.entropy_ood["noise"].shape == (len(noise),)
    m = result.misclassification
    assert m.n_correct + m.n_wrong == len(test)
    assert m.mean_entropy_wrong > m.mean_entropy_correct  # errors are less certain


def test_misclassification_without_errors_has_no_auroc() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    m = ood.misclassification_metrics(probs, np.array([0, 1]))
    assert m.n_wrong == 0 and m.auroc_entropy is None


def test_empty_dataset_is_a_user_error(trained, digits) -> None:
    _, test = digits
    empty = ood.subset_rows(test, 0, 0)
    with pytest.raises(UserError, match="empty"):
        ood.predict_probs(_posterior(trained), empty, "map", samples=1, batch_size=10)


@pytest.mark.parametrize("kind", ["map", "mc", "glm", "dropout"])
def test_attacked_predictive_matches_posterior_predict(trained, digits, kind) -> None:
    _, test = digits
    post = _posterior(trained, prior_precision=1.0)
    pred = AttackedPredictive(post, kind, samples=6, seed=3)
    x = test.inputs[:20]
    gen = torch.Generator().manual_seed(3)
    if kind == "glm":
        # The attack differentiates weight-space samples of the linearised network (forward-mode AD);
        # posterior.predict samples the same Gaussian in logit space, so compare with the former.
        f0, jd = linearised_outputs(post, x, 6, gen)
        expected = torch.softmax(f0.unsqueeze(0) + jd, -1).mean(0)
    else:
        expected = post.predict(x, kind, samples=6, generator=gen)
    torch.testing.assert_close(pred.log_probs(x).exp(), expected, atol=1e-5, rtol=1e-4)


def test_attacks_lower_accuracy(trained, digits) -> None:
    _, test = digits
    post = _posterior(trained, prior_precision=1.0)
    pred = AttackedPredictive(post, "glm", samples=6)
    with torch.no_grad():
        clean_acc = float((pred.log_probs(test.inputs).argmax(-1) == test.targets).double().mean())
    curve = untargeted_attack(pred, test, (0.0, 0.3), batch_size=200)
    assert curve.accuracy[0] == pytest.approx(clean_acc)
    assert curve.accuracy[1] < curve.accuracy[0] - 0.2
    tcurve = targeted_attack(pred, test, target=0, step_size=0.05, steps=8, batch_size=200)
    assert tcurve.target_rate[0] == 0.0 and tcurve.target_rate[-1] > 0.5
    assert len(tcurve.steps) == 9 and tcurve.n < len(test)


def test_probit_cannot_be_attacked(trained) -> None:
    with pytest.raises(UserError, match="probit"):
        AttackedPredictive(_posterior(trained), "probit", samples=2)
