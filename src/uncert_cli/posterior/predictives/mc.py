"""``mc``: the average over ``S`` weight samples of the network (Ritter et al. 2018, eq. 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import (
    Draws,
    Prediction,
    Predictive,
    check_samples,
    reduce_samples,
    sampled_logits,
)


class MonteCarloPredictive(Predictive):
    kind = PredictiveKind.mc
    uses_laplace = True
    sampled = True
    attackable = True
    regression = True
    colour = "blue"
    line_style = "-"

    def predict(self, post, x: Tensor, samples: int, generator) -> Prediction:
        check_samples(samples)
        with torch.no_grad():
            return reduce_samples(post, sampled_logits(post, x, post.deviations(samples, generator)))

    def draws(self, post, samples: int, seed: int) -> Draws:
        # the same deviations predict() uses for (samples, seed)
        return Draws(samples, seed, post.deviations(samples, torch.Generator().manual_seed(seed)))

    def sample_logits(self, post, x: Tensor, draws: Draws) -> Tensor:
        return sampled_logits(post, x, draws.weights)
