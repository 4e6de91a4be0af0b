"""What ``glm`` and ``probit`` share: the linearised network's output covariance ``J Σ Jᵀ``.

Where every block is a Linear/Conv one, ``f`` and ``J Σ Jᵀ`` come from the factored path
(:mod:`~uncert_cli.posterior.output_covariance`), for a whole tuning grid in one pass; otherwise the
diagonal ``diag(J Σ Jᵀ)`` comes from :meth:`LaplacePosterior.functional_variance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from uncert_cli.posterior.predictives.base import Prediction, Predictive, flat


class LinearisedPredictive(Predictive, uses_laplace=True, regression=True):
    """A predictive of the linearised network ``f(x; θ*) + J(x)(θ − θ*)``, Gaussian in its outputs."""

    def predict(self, post, x: Tensor, samples: int, generator) -> Prediction:
        fast = post.output_covariance(x)
        if fast is not None:
            f, cov = fast
            return self.from_covariance(post, f, cov, samples, generator)
        return self.without_covariance(post, x, samples, generator)

    def predict_many(
        self, posts: Sequence, x: Tensor, samples: int, generator, on_each: Callable[[], None]
    ) -> list[Prediction]:
        """One forward, one backward and one rotation into the blocks' eigenbases for all of ``posts``
        where the factored output covariance applies (a tuning grid's cost is then mostly the prediction).
        """
        if posts and posts[0].has_factored_outputs:
            fast = posts[0].output_covariances(x, posts)
            if fast is not None:
                f, covs = fast
                out = []
                for post, cov in zip(posts, covs):
                    out.append(self.from_covariance(post, f, cov, samples, generator))
                    on_each()
                return out
        return super().predict_many(posts, x, samples, generator, on_each)

    def from_covariance(self, post, f: Tensor, cov: Tensor, samples: int, generator) -> Prediction:
        """The predictive from MAP outputs ``f`` ``(B, C)`` and ``J Σ Jᵀ`` ``(B, C, C)``."""
        raise NotImplementedError

    def without_covariance(self, post, x: Tensor, samples: int, generator) -> Prediction:
        """The predictive where the factored covariance does not apply; by default from the marginal
        output variances ``diag(J Σ Jᵀ)``.
        """
        with torch.no_grad():
            f = flat(post.model(x))
        return self.from_variance(post, f, post.functional_variance(x))

    def from_variance(self, post, f: Tensor, var: Tensor) -> Prediction:
        """The predictive from outputs ``f`` and their linearised variances ``var``, both ``(B, C)``:
        regression ``(f, var + σ²)``.
        """
        return f, var + post.noise_std**2
