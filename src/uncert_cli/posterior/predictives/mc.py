"""``mc``: the average over ``S`` weight samples of the network (Ritter et al. 2018, eq. 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import Draws, sampled_logits, seed_of
from uncert_cli.posterior.predictives.sampled import SampledPredictive


class MonteCarloPredictive(SampledPredictive, kind=PredictiveKind.mc, uses_laplace=True, colour="blue", line_style="-"):
    def predict_draws(self, post, samples: int, generator) -> Draws:
        # the posterior's cached deviations for (samples, seed), drawn on the generator's own device
        return Draws(samples, seed_of(generator), post.deviations(samples, generator))

    def draws(self, post, samples: int, seed: int) -> Draws:
        # the same deviations predict() uses for (samples, seed)
        return Draws(samples, seed, post.deviations(samples, torch.Generator().manual_seed(seed)))

    def sample_logits(self, post, x: Tensor, draws: Draws) -> Tensor:
        return sampled_logits(post, x, draws.weights)
