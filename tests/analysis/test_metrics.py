"""Metrics against scikit-learn and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from uncert_cli.analysis import metrics as m
from uncert_cli.errors import UserError


def _random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(size=(n, c)) * 3
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_aupr_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.random(n) < 0.3
    # Rounded scores create many ties, the case where hand-written AUROCs usually go wrong.
    scores = np.round(rng.normal(size=n) + labels * 0.8, 1)
    assert m.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m.aupr(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fpr_at_95_tpr_matches_sklearn_roc_curve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(500) < 0.5
    scores = rng.normal(size=500) + labels
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    expected = fpr[np.nonzero(tpr >= 0.95)[0][0]]
    assert m.fpr_at_tpr(scores, labels, 0.95) == pytest.approx(expected)


def test_perfect_and_reversed_separation() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert m.auroc(scores, labels) == 1.0
    assert m.aupr(scores, labels) == 1.0
    assert m.fpr_at_tpr(scores, labels) == 0.0
    assert m.auroc(-scores, labels) == 0.0
    assert m.fpr_at_tpr(-scores, labels) == 1.0
    # A constant score cannot separate anything: AUROC ½, AP = the positive rate.
    assert m.auroc(np.ones(5), labels) == 0.5
    assert m.aupr(np.ones(5), labels) == pytest.approx(0.4)


def test_detection_needs_both_classes() -> None:
    with pytest.raises(UserError, match="both positive and negative"):
        m.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(UserError, match="NaN"):
        m.auroc([0.1, float("nan")], [0, 1])


def test_entropy_closed_forms() -> None:
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(m.entropy(probs), [0.0, math.log(4), math.log(2)])


def test_accuracy_nll_brier_closed_forms() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 1])
    assert m.accuracy(probs, labels) == pytest.approx(2 / 3)
    assert m.nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3)
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.2**2 + 0.1**2) + (0.6**2 + 0.7**2 + 0.1**2)) / 3
    assert m.brier(probs, labels) == pytest.approx(brier)
    # One-hot correct predictions: perfect scores; confidently wrong: Brier 2.
    eye = np.eye(3)
    assert m.brier(eye, [0, 1, 2]) == 0.0 and m.nll(eye, [0, 1, 2]) == 0.0
    assert m.brier(eye, [1, 2, 0]) == pytest.approx(2.0)


def test_ece_of_calibrated_toy_is_zero() -> None:
    # Confidence 0.8 on 10 examples, 8 of them right: perfectly calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert m.ece(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Same confidence, all wrong: ECE = 0.8.
    assert m.ece(probs, np.ones(10, int)) == pytest.approx(0.8)


def test_ece_matches_bin_formula() -> None:
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, 1000, 10)
    labels = rng.integers(0, 10, 1000)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    expected = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert m.ece(probs, labels) == pytest.approx(expected)
    bins = m.reliability_bins(probs, labels)
    assert bins.counts.sum() == 1000 and bins.edges.shape == (16,)


def test_bad_probabilities_are_user_errors() -> None:
    with pytest.raises(UserError, match="NaN"):
        m.accuracy(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(UserError, match="shape"):
        m.entropy(np.zeros((0, 3)))
