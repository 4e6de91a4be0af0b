"""The predictives' older import path: each kind is now one object in
:mod:`uncert_cli.posterior.predictives` (its flags, prediction and differentiable log-probability).

The network's output is taken as logits (classification) or as the Gaussian mean (regression), and is
flattened to ``(B, C)``. Regression returns ``(mean, variance)``, both ``(B, D)``; the variance includes
the observation noise ``σ²`` (``noise_std**2``) for every kind (``map``: just ``σ²``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from uncert_cli.core.model_state import eval_mode
from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.laplace import DEFAULT_SAMPLE_CHUNK  # re-exported for the old import path
from uncert_cli.posterior.predictives import kinds, predict, predict_many
from uncert_cli.posterior.predictives.base import linearised_logits, sampled_logits
from uncert_cli.posterior.predictives.glm import covariance_root
from uncert_cli.posterior.sampling import DEFAULT_SEED

if TYPE_CHECKING:
    from uncert_cli.posterior.laplace import LaplacePosterior

#: The type of a predictive's name (a :class:`~uncert_cli.core.vocabulary.PredictiveKind` or its string).
Predictive = PredictiveKind
PREDICTIVES: tuple[str, ...] = kinds()


def sampled_outputs(post: LaplacePosterior, x: Tensor, samples: int, generator) -> Tensor:
    """Network outputs at ``S`` posterior samples, ``(S, B, C)`` (the ``mc`` predictive's)."""
    with torch.no_grad():
        return sampled_logits(post, x, post.deviations(samples, generator))


def linearised_outputs(post: LaplacePosterior, x: Tensor, samples: int, generator) -> tuple[Tensor, Tensor]:
    """``f(x; θ*)`` ``(B, C)`` and the sampled ``J(x) δθ`` ``(S, B, C)`` (the weight-space ``glm``'s)."""
    with torch.no_grad():
        return linearised_logits(post, x, post.deviations(samples, generator))


__all__ = [
    "DEFAULT_SAMPLE_CHUNK", "DEFAULT_SEED", "PREDICTIVES", "Predictive", "covariance_root", "eval_mode",
    "linearised_outputs", "predict", "predict_many", "sampled_outputs",
]
