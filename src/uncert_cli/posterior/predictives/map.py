"""``map``: the network at the MAP weights, no posterior."""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import Draws, Prediction, Predictive, flat


class MapPredictive(Predictive, kind=PredictiveKind.map, uses_laplace=False, sampled=False, attackable=True,
                    regression=True, colour="grey", line_style="--"):

    def predict(self, post, x: Tensor, samples: int, generator) -> Prediction:
        with torch.no_grad():
            f = flat(post.model(x))
        return (f, torch.full_like(f, post.noise_std**2)) if post.task == "regression" else torch.softmax(f, -1)

    def draws(self, post, samples: int, seed: int) -> Draws:
        return Draws(samples, seed)

    def log_probs(self, post, x: Tensor, draws: Draws) -> Tensor:
        return torch.log_softmax(flat(post.model(x)), -1)
