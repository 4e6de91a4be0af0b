"""Calibration and detection metrics: numbers in, numbers out (numpy, float64).

Shapes: ``probs`` is ``(N, C)`` class probabilities (rows sum to 1), ``labels`` ``(N,)`` integer classes.
Detection metrics take ``scores`` ``(N,)`` where *higher means more likely positive* and binary
``positives`` ``(N,)`` (1/True = positive). Entropies use the natural log (uniform over 10 classes:
``log 10 ≈ 2.303``). Everything is written from the definitions; the tests check it against
scikit-learn and closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uncert_cli.core.errors import UserError

ECE_BINS = 15
_TINY = np.finfo(np.float64).tiny


def _as_probs(probs: object) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise UserError(f"expected class probabilities of shape (N, C) with N, C ≥ 1, got {p.shape}")
    if not np.isfinite(p).all():
        raise UserError("the predicted probabilities contain NaN or inf; check the model and the prior precision")
    return p


def _as_labels(labels: object, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise UserError(f"expected {n} labels, got shape {y.shape}")
    return y.astype(np.int64)


def entropy(probs: object) -> np.ndarray:
    """Predictive entropy ``−Σ_c p_c log p_c`` per row, ``(N,)``; ``0 · log 0 = 0``."""
    p = _as_probs(probs)
    logs = np.log(np.clip(p, _TINY, None))
    return -(np.where(p > 0, p * logs, 0.0)).sum(axis=1)


def accuracy(probs: object, labels: object) -> float:
    """Fraction of rows whose arg-max class equals the label."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0])
    return float((p.argmax(axis=1) == y).mean())


def nll(probs: object, labels: object) -> float:
    """Mean negative log-probability of the true class (probabilities floored at the smallest float)."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0])
    return float(-np.log(np.clip(p[np.arange(len(y)), y], _TINY, None)).mean())


def brier(probs: object, labels: object) -> float:
    """Multi-class Brier score: mean over rows of ``Σ_c (p_c − 1[c = y])²`` (0 is perfect, 2 the worst)."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0])
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins over ``[0, 1]``; each array is ``(n_bins,)``.

    ``accuracy``/``confidence`` are NaN in empty bins. Bin ``k`` holds confidences in
    ``(edges[k], edges[k+1]]`` (the first bin also takes 0).
    """

    edges: np.ndarray  # (n_bins + 1,)
    counts: np.ndarray  # (n_bins,) int
    accuracy: np.ndarray  # (n_bins,) mean correctness per bin
    confidence: np.ndarray  # (n_bins,) mean max-probability per bin


def reliability_bins(probs: object, labels: object, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin the max-probability (confidence) and compare it with the accuracy in each bin."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0])
    if n_bins < 1:
        raise UserError(f"need at least one bin, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins: searchsorted(side="left") maps a value equal to an edge to the bin below it.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, acc, mean_conf)


def ece(probs: object, labels: object, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: ``Σ_k |B_k|/N · |acc(B_k) − conf(B_k)|`` over equal-width bins."""
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins.counts > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float((bins.counts[filled] * gaps).sum() / bins.counts.sum())


def _detection_inputs(scores: object, positives: object) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(positives).reshape(-1).astype(bool)
    if s.shape != t.shape:
        raise UserError(f"{s.size} scores but {t.size} positive/negative flags")
    if not np.isfinite(s).all():
        raise UserError("the detection scores contain NaN or inf; check the predictions")
    if t.all() or not t.any():
        raise UserError("detection metrics need both positive and negative examples; check both data sets are non-empty")
    return s, t


def _roc_points(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positive counts at each distinct threshold, highest threshold first.

    Returns ``(tp, fp, thresholds)``, each ``(K,)``: predicting "positive" for ``score ≥ thresholds[k]``
    gives ``tp[k]`` true and ``fp[k]`` false positives. Tied scores move together.
    """
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], positives[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(t)[last_of_tie]
    fp = np.cumsum(~t)[last_of_tie]
    return tp.astype(np.float64), fp.astype(np.float64), s[last_of_tie]


def auroc(scores: object, positives: object) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted ½."""
    s, t = _detection_inputs(scores, positives)
    tp, fp, _ = _roc_points(s, t)
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    # Trapezoids: exact for the step curve with ties (a tie block is a diagonal segment = ½ credit).
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def aupr(scores: object, positives: object) -> float:
    """Average precision: ``Σ_k (R_k − R_{k−1}) · P_k`` over distinct thresholds (no interpolation)."""
    s, t = _detection_inputs(scores, positives)
    tp, fp, _ = _roc_points(s, t)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(scores: object, positives: object, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate reaches ``tpr``."""
    s, t = _detection_inputs(scores, positives)
    if not 0.0 < tpr <= 1.0:
        raise UserError(f"the target true-positive rate must lie in (0, 1], got {tpr}")
    tp, fp, _ = _roc_points(s, t)
    reached = np.nonzero(tp / tp[-1] >= tpr - 1e-12)[0][0]
    return float(fp[reached] / fp[-1])


@dataclass(frozen=True)
class Separation:
    """How well a score separates positives from negatives (all in ``[0, 1]``)."""

    auroc: float
    aupr: float
    fpr_at_95_tpr: float


def separation(scores: object, positives: object) -> Separation:
    """AUROC, AUPR (positives as the positive class) and FPR at 95% TPR for one score."""
    return Separation(auroc(scores, positives), aupr(scores, positives), fpr_at_tpr(scores, positives, 0.95))
