"""The network's likelihood ``p(y | x, θ)``, written once: categorical on logits, Gaussian on the mean.

Every command that scores a model on labelled data (``fit``'s MAP log-likelihood, ``prune --evaluate``,
the held-out NLL that ``tune``/``ood`` compare) calls these, so the constants (``log 2π``, ``log σ``) and
the target's shape are handled alike everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def categorical_nll_sum(logits: Tensor, y: Tensor) -> Tensor:
    """``−Σ_n log softmax(logits_n)[y_n]`` for logits ``(B, C)`` and class indices ``(B,)``, in ``logits``' dtype."""
    return F.cross_entropy(logits, y, reduction="sum")


def regression_residual(out: Tensor, y: Tensor) -> Tensor:
    """``out − y`` in float64 with ``y`` shaped like ``out`` (``(B,)`` targets for ``(B, 1)`` outputs)."""
    return (out - y.reshape(out.shape).to(out.dtype)).double()


def gaussian_nll_sum(residual: Tensor, noise_std: float = 1.0) -> Tensor:
    """``−Σ log N(r; 0, σ²)`` over every entry of ``residual`` (float64), ``σ = noise_std``."""
    return 0.5 * (residual / noise_std).square().sum() + residual.numel() * (0.5 * LOG_2PI + math.log(noise_std))


def gaussian_nll(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    """Per-example ``−log N(y; mean, diag(var))`` summed over the ``D`` outputs: ``(B,)`` from ``(B, D)``."""
    yv = y.reshape(mean.shape).to(mean.dtype)
    return 0.5 * (torch.log(2 * math.pi * var) + (yv - mean).square() / var).sum(1)
