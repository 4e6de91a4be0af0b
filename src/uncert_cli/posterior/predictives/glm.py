"""``glm``: the linearised network ``f(x; θ*) + J(x)(θ − θ*)``, whose outputs are Gaussian with covariance ``J Σ Jᵀ``.

Regression is exact: mean ``f``, variance ``diag(J Σ Jᵀ) + σ²``. Classification averages the softmax of
``S`` sampled logits: drawn from ``N(f, J Σ Jᵀ)`` where the factored covariance applies (one set of
standard normals per ``(S, seed)`` for every example and batch), else as ``f + J δθ_s`` for the
posterior's weight deviations (forward-mode ``jvp``, vmapped over the samples, no Jacobian formed).
An attack always uses the weight-space form, which is differentiable in ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.base import Draws, Prediction, check_samples, linearised_logits, seed_of
from uncert_cli.posterior.predictives.linearised import LinearisedPredictive


class GlmPredictive(LinearisedPredictive, kind=PredictiveKind.glm, sampled=True, attackable=True, colour="vermillion",
                    line_style="-"):

    def from_covariance(self, post, f: Tensor, cov: Tensor, samples: int, generator) -> Prediction:
        if post.task == "regression":
            return self.from_variance(post, f, torch.diagonal(cov, dim1=-2, dim2=-1))
        check_samples(samples)
        return torch.softmax(sampled_logits_from_covariance(f, cov, samples, generator), -1).mean(0)

    def without_covariance(self, post, x: Tensor, samples: int, generator) -> Prediction:
        if post.task == "regression":
            return super().without_covariance(post, x, samples, generator)
        check_samples(samples)
        with torch.no_grad():  # forward-mode AD works under no_grad; no graphs through other parameters
            f0, jd = linearised_logits(post, x, post.deviations(samples, generator))
        return torch.softmax(f0.unsqueeze(0) + jd, -1).mean(0)

    def draws(self, post, samples: int, seed: int) -> Draws:
        drawn = post.sample(samples, torch.Generator().manual_seed(seed))
        # Tangents as posterior draws minus the MAP (not the cached deviations they came from): the
        # attack's numbers as they were before it shared this code, to the last bit.
        return Draws(samples, seed, {n: v - post.map_parameters[n] for n, v in drawn.items()})

    def sample_logits(self, post, x: Tensor, draws: Draws) -> Tensor:
        f0, jd = linearised_logits(post, x, draws.weights)
        return f0.unsqueeze(0) + jd


def covariance_root(cov: Tensor) -> Tensor:
    """A square root ``L`` with ``L Lᵀ = cov`` for a batch ``(B, C, C)``, in float64.

    Cholesky (unique, so predictions change smoothly with the hyperparameters), with a jitter of
    1e-12 of the largest variance; matrices that still fail (numerically singular) fall back to a
    clipped eigendecomposition.
    """
    c = cov.double()
    scale = torch.diagonal(c, dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)
    eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
    L, info = torch.linalg.cholesky_ex(c + 1e-12 * scale[:, None, None] * eye)
    bad = info > 0
    if bad.any():
        evals, evecs = torch.linalg.eigh(c[bad])
        L[bad] = evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)
    return L


def sampled_logits_from_covariance(f: Tensor, cov: Tensor, samples: int, generator) -> Tensor:
    """``S`` draws of the linearised logits ``N(f, cov)``, ``(S, B, C)``.

    One set of standard normals ``(S, C)`` per ``(S, seed)`` serves every example and batch (as the
    weight-space samples do), so predictions are deterministic and independent of batching.
    """
    z = torch.randn(samples, f.shape[1], generator=torch.Generator().manual_seed(seed_of(generator)), dtype=torch.float64)
    noise = torch.einsum("bck,sk->sbc", covariance_root(cov), z.to(cov.device))
    return f.unsqueeze(0) + noise.to(f.dtype)
