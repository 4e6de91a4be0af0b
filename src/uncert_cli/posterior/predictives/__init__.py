"""The predictives, one object each in one registry (:data:`PREDICTIVES`).

``ood``, ``attack``, ``tune``, the plots' colours and the CLI's choices read the registry: which kinds
use the Laplace posterior (and so are tuned), which are sampled, which an attack can differentiate,
which answer regression. One module per kind (``map``, ``mc``, ``glm``, ``probit``, ``dropout``) holds
its flags, its prediction and its differentiable log-probability, and registers itself by declaring its
kind (this package imports every module in it); :mod:`.base` holds the network forwards they share, so
``ood`` and ``attack`` run the same code on the same samples.

Sampled kinds draw their ``S`` samples once per posterior and ``(S, seed)`` and reuse them for every
call and batch (``seed = generator.initial_seed()``, 0 without a generator), so predictions are
deterministic and consistent across batches. MC dropout reseeds torch's RNG the same way (inside
``torch.random.fork_rng``, leaving the global state untouched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.model_state import eval_mode
from uncert_cli.core.registry import import_package_modules
from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.curvature.plain_kernels import plain_kernels
from uncert_cli.posterior.predictives.base import REGISTERED_PREDICTIVES, Draws, Prediction, Predictive

if TYPE_CHECKING:
    from uncert_cli.posterior.laplace import LaplacePosterior

import_package_modules(__name__, __path__)  # every predictive class registers itself
# In the order of the PredictiveKind enum (the CLI's choices); tests/posterior/test_predictive_registry.py
# checks that every member has its predictive.
PREDICTIVES: dict[PredictiveKind, Predictive] = {
    kind: REGISTERED_PREDICTIVES[kind] for kind in PredictiveKind if kind in REGISTERED_PREDICTIVES
}

# The default Laplace predictive: probit where the posterior has the factored output covariance
# (every block a Linear/Conv one: closed form, deterministic, best NLL/ECE/AUROC on the MNIST MLP in
# docs/benchmarks.md), else glm (weight-space samples through forward-mode AD, any architecture).
# Both linearise, so neither can collapse the MAP's accuracy the way sampled weights (mc) can.
DEFAULT_LAPLACE = PredictiveKind.probit
FALLBACK_LAPLACE = PredictiveKind.glm


def kinds(where: Callable[[Predictive], bool] = lambda p: True) -> tuple[str, ...]:
    """The names of the registered predictives for which ``where(predictive)`` holds, in registry order."""
    return tuple(str(k) for k, p in PREDICTIVES.items() if where(p))


def get(kind: PredictiveKind | str, param: str = "kind") -> Predictive:
    """The registered predictive ``kind``; a :class:`UserError` listing the kinds otherwise."""
    return PREDICTIVES[PredictiveKind.parse(kind, param, label="predictive")]


def default_laplace(posterior: LaplacePosterior, allowed: Iterable[str] | None = None) -> PredictiveKind:
    """:data:`DEFAULT_LAPLACE` for a classifier with the factored output covariance (when ``allowed``), else
    :data:`FALLBACK_LAPLACE`.
    """
    usable = DEFAULT_LAPLACE in (allowed if allowed is not None else kinds())
    fast = posterior.task == "classification" and posterior.has_factored_outputs
    return DEFAULT_LAPLACE if usable and fast else FALLBACK_LAPLACE


def _checked(post: LaplacePosterior, kind: PredictiveKind | str) -> Predictive:
    predictive = get(kind)
    if post.task == "regression" and not predictive.regression:
        raise UserError(f"the {predictive.kind} predictive is for classification; use 'glm' for regression")
    return predictive


def _running(post: LaplacePosterior, predictive: Predictive) -> contextlib.AbstractContextManager:
    """Eval mode, and plain kernels for every kind but ``map``: sampled and linearised predictives vmap or
    differentiate through the model, which fused recurrent and attention kernels support neither of.
    """
    stack = contextlib.ExitStack()
    stack.enter_context(eval_mode(post.model))
    if predictive.kind is not PredictiveKind.map:
        stack.enter_context(plain_kernels(post.model))
    return stack


def predict(post: LaplacePosterior, x: Tensor, kind: PredictiveKind | str, samples: int, generator) -> Prediction:
    """Predictive ``kind`` of ``post`` for a batch ``x`` on the posterior's device (see :class:`Predictive`)."""
    predictive = _checked(post, kind)
    with _running(post, predictive):
        return predictive.predict(post, x, samples, generator)


def predict_many(
    posts: Sequence[LaplacePosterior],
    x: Tensor,
    kind: PredictiveKind | str,
    samples: int,
    generator,
    on_each: Callable[[], None] = lambda: None,
) -> list[Prediction]:
    """:func:`predict` of each of ``posts`` (one posterior under several hyperparameter settings, from
    ``with_hyperparameters``) on the same ``x``; ``on_each()`` after each. ``glm`` and ``probit`` share one
    pass for all of them where the factored output covariance applies.
    """
    if not posts:
        return []
    predictive = _checked(posts[0], kind)
    with _running(posts[0], predictive):
        return predictive.predict_many(posts, x, samples, generator, on_each)


def attack_draws(post: LaplacePosterior, kind: PredictiveKind | str, samples: int, seed: int) -> Draws:
    """The fixed samples :func:`log_probs` of ``kind`` uses, drawn once (per attack)."""
    return get(kind).draws(post, samples, seed)


def log_probs(post: LaplacePosterior, x: Tensor, kind: PredictiveKind | str, draws: Draws) -> Tensor:
    """``log p(y | x)`` ``(B, C)`` of ``kind`` for ``draws``, differentiable w.r.t.

    ``x`` (weights fixed); ``x`` on the posterior's device.
    """
    predictive = get(kind)
    with _running(post, predictive):
        return predictive.log_probs(post, x, draws)


__all__ = [
    "DEFAULT_LAPLACE", "FALLBACK_LAPLACE", "PREDICTIVES", "Draws", "Prediction", "Predictive", "attack_draws",
    "default_laplace", "get", "kinds", "log_probs", "predict", "predict_many",
]
