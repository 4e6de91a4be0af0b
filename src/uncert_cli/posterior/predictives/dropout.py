"""``dropout``: MC dropout -- the Dropout modules sampling, everything else in eval mode; no posterior."""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import (
    Draws,
    Prediction,
    Predictive,
    dropout_logits,
    reduce_samples,
    seed_of,
)


class DropoutPredictive(Predictive):
    kind = PredictiveKind.dropout
    uses_laplace = False
    sampled = True
    attackable = True
    regression = True
    colour = "green"
    line_style = ":"

    def predict(self, post, x: Tensor, samples: int, generator) -> Prediction:
        with torch.no_grad():
            return reduce_samples(post, dropout_logits(post, x, samples, seed_of(generator)))

    def draws(self, post, samples: int, seed: int) -> Draws:
        return Draws(samples, seed)  # the masks come from the seed, the same at every step

    def sample_logits(self, post, x: Tensor, draws: Draws) -> Tensor:
        return dropout_logits(post, x, draws.samples, draws.seed)
