"""``dropout``: MC dropout -- the Dropout modules sampling, everything else in eval mode; no posterior."""

from __future__ import annotations

from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import Draws, dropout_logits
from uncert_cli.posterior.predictives.sampled import SampledPredictive


class DropoutPredictive(SampledPredictive, kind=PredictiveKind.dropout, uses_laplace=False, colour="green",
                        line_style=":"):
    def draws(self, post, samples: int, seed: int) -> Draws:
        return Draws(samples, seed)  # the masks come from the seed, the same at every step

    def sample_logits(self, post, x: Tensor, draws: Draws) -> Tensor:
        return dropout_logits(post, x, draws.samples, draws.seed)
