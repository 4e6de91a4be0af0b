"""What every predictive is: its flags, how it predicts, and its differentiable log-probability.

A predictive answers two questions about a batch ``x`` under a :class:`LaplacePosterior`:

* :meth:`Predictive.predict` -- class probabilities ``(B, C)`` (regression: ``(mean, variance)``,
  both ``(B, D)``, the variance including ``σ²``), what ``ood``, ``tune`` and ``report`` use;
* :meth:`Predictive.log_probs` -- ``log p(y | x)`` ``(B, C)``, differentiable w.r.t. ``x``, for the
  fixed :class:`Draws` an attack keeps for all its steps (``attack``).

Both run the network through the shared forwards below (:func:`sampled_logits`,
:func:`linearised_logits`, :func:`dropout_logits`), so ``ood`` and ``attack`` evaluate the same
function of the same samples. The caller (:func:`~uncert_cli.posterior.predictives.run`) has put the
model in eval mode and, for every kind but ``map``, on plain kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call, jvp, vmap

from uncert_cli.core.errors import UserError
from uncert_cli.core.model_state import eval_mode, has_dropout
from uncert_cli.core.registry import register
from uncert_cli.core.slow_path import announce_slow_path, forward_ad_unsupported, vmap_unsupported
from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.posterior.predictives.reverse_jvp import jvp_by_reverse_mode
from uncert_cli.posterior.sampling import DEFAULT_SEED

if TYPE_CHECKING:
    from uncert_cli.posterior.laplace import LaplacePosterior

Prediction = Tensor | tuple[Tensor, Tensor]


@dataclass
class Draws:
    """What a sampled predictive keeps fixed across an attack's batches and steps.

    ``weights``: per covered parameter, ``(S, *shape)`` -- what :meth:`Predictive.log_probs` of the kind
    adds to (``mc``: deviations from the MAP; ``glm``: tangents of the linearised network); empty for
    ``map`` and ``dropout`` (whose masks come from ``seed``).
    """

    samples: int
    seed: int
    weights: dict[str, Tensor] = field(default_factory=dict)


# Kind -> its predictive; each class that declares a ``kind`` enters it (an instance) when it is defined.
# ``predictives.PREDICTIVES`` is this table in the order of the PredictiveKind enum.
REGISTERED_PREDICTIVES: dict[str, Predictive] = {}
FLAGS = ("uses_laplace", "sampled", "attackable", "regression", "colour", "line_style")


class Predictive:
    """One predictive kind.

    Subclasses declare the kind and the flags as class keywords (``class MapPredictive(Predictive,
    kind=PredictiveKind.map, uses_laplace=False, ...)``; a shared base may fix some flags for the classes
    deriving from it), which registers the kind, and implement :meth:`predict` (and, where ``attackable``,
    :meth:`draws` and :meth:`sample_logits` or :meth:`log_probs`).
    """

    kind: ClassVar[PredictiveKind]
    #: uses the Laplace posterior (so ``N`` and ``τ`` matter and are tuned per predictive)
    uses_laplace: ClassVar[bool]
    #: averages over ``S`` samples (``--samples``), drawn once per ``(S, seed)``
    sampled: ClassVar[bool]
    #: has a differentiable log-probability an attack can step along
    attackable: ClassVar[bool]
    #: answers regression models (``(mean, variance)``)
    regression: ClassVar[bool]
    #: the plots' colour (a name in ``render/palette.py``'s Okabe–Ito set) and matplotlib line style
    colour: ClassVar[str]
    line_style: ClassVar[str]

    def __init_subclass__(
        cls,
        *,
        kind: PredictiveKind | None = None,
        uses_laplace: bool | None = None,
        sampled: bool | None = None,
        attackable: bool | None = None,
        regression: bool | None = None,
        colour: str | None = None,
        line_style: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        declared = dict(zip(FLAGS, (uses_laplace, sampled, attackable, regression, colour, line_style)))
        for name, value in declared.items():
            if value is not None:
                setattr(cls, name, value)
        if kind is None:  # a shared base (the linearised predictives)
            return
        missing = [name for name in FLAGS if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"predictive {cls.__qualname__} does not declare {', '.join(missing)}")
        cls.kind = kind
        register(REGISTERED_PREDICTIVES, kind, cls(), "predictives")

    def predict(self, post: LaplacePosterior, x: Tensor, samples: int, generator) -> Prediction:
        """Probabilities ``(B, C)`` or ``(mean, variance)`` ``(B, D)`` for a batch ``x``."""
        raise NotImplementedError

    def predict_many(
        self, posts: Sequence[LaplacePosterior], x: Tensor, samples: int, generator, on_each: Callable[[], None]
    ) -> list[Prediction]:
        """:meth:`predict` of each of ``posts`` (one posterior under several hyperparameters); ``on_each()`` after each."""
        out = []
        for post in posts:
            out.append(self.predict(post, x, samples, generator))
            on_each()
        return out

    def draws(self, post: LaplacePosterior, samples: int, seed: int) -> Draws:
        """The fixed samples :meth:`log_probs` uses; drawn once per attack."""
        raise UserError(f"the {self.kind} predictive has no differentiable log-probability", param="kind")

    def sample_logits(self, post: LaplacePosterior, x: Tensor, draws: Draws) -> Tensor:
        """Logits of each sample ``(S, B, C)``, differentiable w.r.t. ``x``."""
        raise NotImplementedError

    def log_probs(self, post: LaplacePosterior, x: Tensor, draws: Draws) -> Tensor:
        """``log p(y | x)`` ``(B, C)``: the log of the average probability over the samples, computed
        stably (``logsumexp`` over samples ``− log S``); keeps the graph to ``x``.
        """
        per_sample = self.sample_logits(post, x, draws)
        return torch.logsumexp(torch.log_softmax(per_sample, -1), 0) - math.log(draws.samples)


# ----------------------------------------------------------------------------- shared helpers
def flat(out: Tensor) -> Tensor:
    """Network outputs as ``(B, C)``."""
    return out.reshape(out.shape[0], -1)


def check_samples(samples: int) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive integer, got {samples!r}; pass e.g. samples=100")


def seed_of(generator) -> int:
    """The seed sampled predictives draw from: the generator's initial seed, :data:`DEFAULT_SEED` without one."""
    return generator.initial_seed() if generator is not None else DEFAULT_SEED


def reduce_samples(post: LaplacePosterior, outs: Tensor) -> Prediction:
    """The predictive from per-sample outputs ``(S, B, C)``: mean softmax, or (regression) mean and variance plus ``σ²``."""
    if post.task == "regression":
        return outs.mean(0), outs.var(0, unbiased=False) + post.noise_std**2
    return torch.softmax(outs, -1).mean(0)


def over_sample_chunks(
    fn: Callable[[dict[str, Tensor]], Tensor], per_sample: dict[str, Tensor], chunk: int, state: dict[str, bool]
) -> Tensor:
    """``fn`` of every sample's slice of ``per_sample`` (each ``(S, *shape)``), stacked ``(S, ...)``:
    vmapped over chunks of ``chunk`` samples, or one by one once vmap has failed on this model
    (``state["vmap"]`` remembers it, e.g. for data-dependent control flow).
    """
    n_samples = next(iter(per_sample.values())).shape[0]
    outs = []
    for start in range(0, n_samples, chunk):
        part = {k: v[start : start + chunk] for k, v in per_sample.items()}
        if state.get("vmap", True):
            try:
                outs.append(vmap(fn)(part))
                continue
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                if not vmap_unsupported(exc):
                    raise
                announce_slow_path("the network is evaluated at the posterior samples", exc)
                state["vmap"] = False
        n = next(iter(part.values())).shape[0]
        outs.append(torch.stack([fn({k: v[i] for k, v in part.items()}) for i in range(n)]))
    return torch.cat(outs)


def sampled_logits(post: LaplacePosterior, x: Tensor, deviations: dict[str, Tensor]) -> Tensor:
    """The network at ``θ* + δ_s`` for each deviation, ``(S, B, C)`` (``functional_call``, vmapped over
    chunks of samples where the model allows it). Differentiable w.r.t. ``x`` under grad mode.
    """
    model, theta = post.model, post.map_parameters

    def single(d: dict[str, Tensor]) -> Tensor:
        return flat(functional_call(model, {k: theta[k] + d[k] for k in d}, (x,)))

    return post.map_over_samples(single, deviations)


def linearised_logits(post: LaplacePosterior, x: Tensor, tangents: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``f(x; θ*)`` ``(B, C)`` and ``J(x) t_s`` ``(S, B, C)`` for each tangent (forward-mode ``jvp``, no Jacobian formed).

    Differentiable w.r.t. ``x`` in reverse mode under grad mode.
    """
    model, theta = post.model, post.map_parameters

    def f(p: dict[str, Tensor]) -> Tensor:
        return flat(functional_call(model, p, (x,)))

    def single(t: dict[str, Tensor]) -> Tensor:
        return jvp(f, (theta,), (t,))[1]

    def by_reverse_mode(t: dict[str, Tensor]) -> Tensor:
        return jvp_by_reverse_mode(f, theta, t)

    state = post.slow_paths
    if state.get("forward_ad", True):
        try:
            return f(theta), post.map_over_samples(single, tangents)
        except (RuntimeError, NotImplementedError) as exc:
            if not forward_ad_unsupported(exc):
                raise
            announce_slow_path("the linearised network's J·δθ is formed by two backward passes per sample,", exc)
            state["forward_ad"] = False
    n_samples = next(iter(tangents.values())).shape[0]  # autograd.grad runs under no vmap: one sample at a time
    return f(theta), torch.stack([by_reverse_mode({k: v[i] for k, v in tangents.items()}) for i in range(n_samples)])


def dropout_logits(post: LaplacePosterior, x: Tensor, samples: int, seed: int) -> Tensor:
    """``S`` passes with the Dropout modules sampling, ``(S, B, C)``; torch's RNG reseeded with ``seed``
    inside ``fork_rng`` (the same masks every call, the global state untouched).
    """
    check_samples(samples)
    model = post.model
    if not has_dropout(model):
        raise UserError(
            "the model has no Dropout modules, so MC dropout is not available; use kind 'glm', 'mc' or 'probit'"
        )
    devices = [x.device.index] if x.device.type == "cuda" else []
    with eval_mode(model, dropout_train=True), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch.stack([flat(model(x)) for _ in range(samples)])
