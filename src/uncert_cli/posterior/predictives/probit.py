"""``probit``: classification only, closed form ``softmax(f(x; θ*) · κ)`` with
``κ = (1 + π/8 · diag(J Σ Jᵀ))^{-1/2}``; deterministic, and without a sampled form to attack.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import Prediction
from uncert_cli.posterior.predictives.linearised import LinearisedPredictive


class ProbitPredictive(LinearisedPredictive, kind=PredictiveKind.probit, sampled=False, attackable=False,
                       regression=False, colour="purple", line_style="-."):

    def from_covariance(self, post, f: Tensor, cov: Tensor, samples: int, generator) -> Prediction:
        return self.from_variance(post, f, torch.diagonal(cov, dim1=-2, dim2=-1))

    def from_variance(self, post, f: Tensor, var: Tensor) -> Prediction:
        return torch.softmax(f / torch.sqrt(1.0 + math.pi / 8.0 * var), -1)
