"""What ``mc`` and ``dropout`` share: the average of the network's outputs over ``S`` samples.

``predict`` runs the kind's own :meth:`~.base.Predictive.sample_logits` on the same draws an attack keeps
(:meth:`~.base.Predictive.draws` for the generator's seed), so ``ood`` and ``attack`` evaluate one function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.posterior.predictives.base import Draws, Prediction, Predictive, check_samples, reduce_samples, seed_of


class SampledPredictive(Predictive, sampled=True, attackable=True, regression=True):
    """Mean softmax (regression: mean and variance plus ``σ²``) of ``S`` sampled networks ``(S, B, C)``."""

    def predict(self, post, x: Tensor, samples: int, generator) -> Prediction:
        check_samples(samples)
        with torch.no_grad():
            return reduce_samples(post, self.sample_logits(post, x, self.predict_draws(post, samples, generator)))

    def predict_draws(self, post, samples: int, generator) -> Draws:
        """The draws :meth:`predict` uses: :meth:`draws` for the generator's seed."""
        return self.draws(post, samples, seed_of(generator))
