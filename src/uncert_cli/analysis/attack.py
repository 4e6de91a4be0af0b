"""Fast-gradient-sign attacks against a predictive (Ritter et al. 2018, §5.3; Goodfellow et al. 2014).

The gradient goes through the predictive that is attacked: ``log p^{(M)}(y | x)`` with

* ``map``: ``log softmax f(x; θ*)``;
* ``mc``: ``log (1/S) Σ_s softmax f(x; θ_s)``, every sample a ``torch.func.functional_call`` with its own
  parameter dict (vmapped over chunks of samples);
* ``glm``: the same average over the linearised network ``f(x; θ*) + J(x) δθ_s`` (forward-mode ``jvp``,
  differentiated in reverse w.r.t. ``x``);
* ``dropout``: ``S`` passes with fixed dropout masks (seeded), Dropout modules in train mode.

The weight samples are drawn once per attack and reused for every batch and step. Step sizes are
multiplied by the per-dimension range ``max − min`` of the attacked data (Ritter et al.), so ``η = 1``
can move a pixel across its whole range. No clipping is applied.

* untargeted: ``x_adv = x − η · range · sign ∇_x log p(ŷ | x)`` with ``ŷ`` the class the predictive
  predicts at ``x``, one step per ``η``;
* targeted: ``x_{t+1} = x_t + η · range · sign ∇_x log p(target | x_t)``, repeated; examples that the
  predictive already assigns to the target class are left out (per predictive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from uncert_cli.analysis.ood import Hyperparameters
from uncert_cli.core.errors import UserError
from uncert_cli.core.model_state import has_dropout
from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.posterior import LaplacePosterior, predictives

ATTACK_KINDS = predictives.kinds(lambda p: p.attackable)
UNTARGETED_STEP_SIZES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
# Weight samples (mc, glm) or dropout masks per attacked predictive. Every attack step differentiates through
# all of them (glm: a forward-mode tangent per sample, then reverse mode), so the cost is linear in this
# number: 10 keeps the README's `uncert attack` (500 examples, 50 targeted steps) at about two minutes on
# two CPU cores; the ensemble of 10 is fixed for the whole attack, so the curves are of one predictive.
ATTACK_SAMPLES = 10
OnBatch = Callable[[float], None]


class Attacked(Protocol):
    """What an attack needs of a predictive: ``log p(y | x)`` ``(B, C)``, differentiable in ``x``."""

    def log_probs(self, x: Tensor) -> Tensor: ...  # noqa: D102 - the class docstring says it


class AttackedPredictive:
    """``log p(y | x)`` of one predictive, ``(B, C)``, differentiable w.r.t. ``x`` (weights fixed).

    The predictive's own :meth:`~uncert_cli.posterior.predictives.Predictive.log_probs`, the code ``ood``
    predicts with, for samples drawn once here (:class:`~uncert_cli.posterior.predictives.Draws`) and kept
    for every batch and step. ``glm`` is sampled in weight space (``f + J δθ`` by forward-mode AD,
    differentiable in ``x``), a Monte-Carlo estimate of the same linearised predictive that ``ood``
    samples in logit space where the factored output covariance applies.
    """

    def __init__(self, posterior: LaplacePosterior, kind: str, *, samples: int, seed: int = 0) -> None:
        predictive = predictives.get(kind)
        if not predictive.attackable:
            raise UserError(
                f"cannot attack the '{kind}' predictive; use one of {', '.join(ATTACK_KINDS)} "
                "(probit has no sampled form to differentiate)"
            )
        if posterior.task != "classification":
            raise UserError("uncert attack works on classifiers; this factor file is for regression")
        if samples < 1:
            raise UserError(f"{{param}} must be a positive whole number, got {samples}", param="samples")
        if predictive.kind == "dropout" and not has_dropout(posterior.model):
            raise UserError(
                "the model has no Dropout modules, so the dropout predictive cannot be attacked; drop it from {predictive}",
                mentions=("predictive",),
            )
        self.kind, self.samples, self.seed = predictive.kind, samples, seed
        self.posterior = posterior
        self.draws = predictives.attack_draws(posterior, predictive.kind, samples, seed)

    def log_probs(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` ``(B, C)``; keeps the graph to ``x`` when ``x.requires_grad``.

        Computed where the weights live and answered on ``x``'s device (``.to`` is differentiable).
        """
        device = self.posterior.device
        if x.device != device:
            return predictives.log_probs(self.posterior, x.to(device), self.kind, self.draws).to(x.device)
        return predictives.log_probs(self.posterior, x, self.kind, self.draws)


def _entropy(log_p: Tensor) -> Tensor:
    return -(log_p.exp() * log_p).sum(-1)


def _sign_gradient(pred: Attacked, x: Tensor, classes: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(log p(· | x), sign ∇_x log p(classes | x))``: ``(B, C)`` detached and ``x``'s shape.

    One forward serves both the statistics at ``x`` and the gradient (``classes=None``: the predicted
    class), so an attack step costs one forward and one backward rather than an extra evaluation.
    """
    x = x.detach().requires_grad_(True)
    log_p = pred.log_probs(x)
    chosen = log_p.argmax(-1) if classes is None else classes
    objective = log_p.gather(1, chosen.reshape(-1, 1)).sum()
    if not objective.requires_grad:  # a network that reads its input under no_grad: nothing to step along
        return log_p.detach(), torch.zeros_like(x)
    # allow_unused: the output may not depend on x through the graph (a .detach() or no_grad on the input's
    # path); its gradient is then 0, and the step leaves x where it is
    (grad,) = torch.autograd.grad(objective, x, allow_unused=True)
    return log_p.detach(), torch.zeros_like(x) if grad is None else grad.sign()


def data_range(data: ArrayDataset) -> Tensor:
    """Per-dimension ``max − min`` over the dataset, shape ``sample_shape``."""
    if len(data) == 0:
        raise UserError(f"dataset '{data.name}' is empty; check the spec or {{limit}}", mentions=("limit",))
    x = data.inputs.float()
    return x.amax(0) - x.amin(0)


@dataclass
class UntargetedCurve:
    """One predictive under untargeted FGSM; lists are aligned with ``step_sizes``."""

    step_sizes: list[float]
    accuracy: list[float]  # vs the true label
    mean_entropy: list[float]
    n: int


@dataclass
class TargetedCurve:
    """One predictive under the iterated targeted attack; lists are aligned with ``steps`` (0 = clean)."""

    target: int
    step_size: float
    steps: list[int]
    accuracy: list[float]  # vs the true label
    target_rate: list[float]  # fraction predicted as the target class
    mean_entropy: list[float]
    n: int  # examples attacked (those not predicted as the target before the attack)


def untargeted_attack(
    pred: Attacked,
    data: ArrayDataset,
    step_sizes: tuple[float, ...] = UNTARGETED_STEP_SIZES,
    *,
    batch_size: int,
    on_batch: OnBatch | None = None,
) -> UntargetedCurve:
    """Accuracy and mean entropy after one FGSM step of each size (Ritter Fig. 3)."""
    scale = data_range(data)
    correct = torch.zeros(len(step_sizes), dtype=torch.float64)
    entropy = torch.zeros(len(step_sizes), dtype=torch.float64)
    for x, y in iter_batches(data, batch_size):
        clean, direction = _sign_gradient(pred, x, None)
        direction = direction * scale
        with torch.no_grad():
            for i, eta in enumerate(step_sizes):
                log_p = clean if eta == 0 else pred.log_probs(x - eta * direction)
                correct[i] += (log_p.argmax(-1) == y).sum()
                entropy[i] += _entropy(log_p).sum()
        if on_batch is not None:
            on_batch(x.shape[0])
    n = len(data)
    return UntargetedCurve(list(map(float, step_sizes)), (correct / n).tolist(), (entropy / n).tolist(), n)


def targeted_attack(
    pred: Attacked,
    data: ArrayDataset,
    *,
    target: int,
    step_size: float = 0.01,
    steps: int = 50,
    batch_size: int,
    on_batch: OnBatch | None = None,
) -> TargetedCurve:
    """Iterated FGSM towards ``target`` (Ritter Fig. 4); step 0 is the clean input."""
    scale = data_range(data)
    correct = torch.zeros(steps + 1, dtype=torch.float64)
    hits = torch.zeros(steps + 1, dtype=torch.float64)
    entropy = torch.zeros(steps + 1, dtype=torch.float64)
    n = 0
    for x, y in iter_batches(data, batch_size):
        with torch.no_grad():
            keep = pred.log_probs(x).argmax(-1) != target
        x, y = x[keep].clone(), y[keep]
        share = x.shape[0] / (steps + 1)  # progress is counted in examples, advanced step by step
        skipped = int(keep.numel()) - x.shape[0]
        if on_batch is not None and skipped:
            on_batch(skipped)
        if x.shape[0] > 0:
            n += x.shape[0]
            goal = torch.full_like(y, target)
            for t in range(steps + 1):
                if t < steps:  # the forward at x_t gives its statistics and the step to x_{t+1}
                    log_p, direction = _sign_gradient(pred, x, goal)
                    x = x + step_size * scale * direction
                else:
                    with torch.no_grad():
                        log_p = pred.log_probs(x)
                correct[t] += (log_p.argmax(-1) == y).sum()
                hits[t] += (log_p.argmax(-1) == target).sum()
                entropy[t] += _entropy(log_p).sum()
                if on_batch is not None:
                    on_batch(share)
    if n == 0:
        raise UserError(f"every example is already predicted as class {target}; pick another {{param}}", param="target")
    return TargetedCurve(
        target, float(step_size), list(range(steps + 1)), (correct / n).tolist(), (hits / n).tolist(),
        (entropy / n).tolist(), n,
    )


@dataclass
class AttackReport:
    """Curves per predictive plus the settings they were computed with."""

    settings: dict[str, object]
    hyperparameters: dict[str, Hyperparameters | None]
    untargeted: dict[str, UntargetedCurve] = field(default_factory=dict)
    targeted: dict[str, TargetedCurve] = field(default_factory=dict)
    # several factor files: each member's predictives' hyperparameters, ``{"<kind>-<m>": ...}`` per member in
    # order (``hyperparameters`` holds the first member's); None for one file
    member_hyperparameters: list[dict[str, Hyperparameters | None]] | None = None
