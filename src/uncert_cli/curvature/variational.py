"""Mean-field variational inference after the fact (``uncert fit --method vi``).

The variational family is ``q(θ) = Π_i N(μ_i, σ_i²)`` over the covered parameters (the others stay at
the checkpoint's values), with the precision written as a diagonal Laplace's,

    1/σ_i² = n_eff · d_i + τ,     d_i = exp(s_i) > 0,     n_eff = N / σ_noise²  (regression; N otherwise),

so ``d`` is a data term in the units of a curvature diagonal and every later command treats the fit
like a diagonal Laplace block centred at ``μ``. (This keeps each variance below the prior's ``1/τ``,
which the optimum of a likelihood with positive curvature satisfies anyway.) ``μ`` starts at the
checkpoint's weights and ``d`` at the exact GGN diagonal (the diagonal Laplace), so the fit starts
from a sensible posterior. The objective is the ELBO with the Laplace files' likelihood, ``N``, ``τ``:

    ELBO = N/|D| · Σ_n E_q[log p(y_n | x_n, θ)] − KL(q ‖ N(0, 1/τ)),
    KL   = ½ Σ_i (τ σ_i² + τ μ_i² − 1 − log(τ σ_i²)),

maximised by Adam on ``(μ, s)`` with a cosine learning-rate decay to 0 over ``epochs`` passes of
minibatches (the decay lets the Monte-Carlo noise of the last steps average out). Gradients of the
expectation come from the reparameterisation trick: Linear and Conv layers use the *local*
reparameterisation (Kingma, Salimans & Welling 2015): their pre-activations are sampled per example
from ``N(x μ_Wᵀ + μ_b, x² σ_W²ᵀ + σ_b²)`` instead of sampling weights, which lowers the gradient
variance; every other covered parameter is sampled once per Monte-Carlo sample and batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from uncert_cli.core.errors import UserError
from uncert_cli.core.likelihood import categorical_nll_sum, gaussian_nll_sum, regression_residual
from uncert_cli.core.model_state import eval_mode
from uncert_cli.curvature.blocks import MeanFieldBlock
from uncert_cli.curvature.subset import Unit

# d starts at max(diagonal, this · τ / n_eff): a weight the data never touched gets a data term a millionth
# of the prior's precision (log d must be finite), i.e. a variance 1e-6 below the prior's.
_FLOOR = 1e-6
_LOCAL_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class VariationalSettings:
    """How to fit: the likelihood's ``N``, ``τ`` and noise, and the optimiser's settings."""

    n_data: float
    prior_precision: float
    task: str = "classification"
    noise_std: float = 1.0
    epochs: int = 5
    lr: float = 1e-3
    mc_samples: int = 1
    generator: torch.Generator | None = None
    on_batch: Callable[[int], None] | None = None
    on_status: Callable[[str], None] | None = None

    @property
    def n_eff(self) -> float:
        return self.n_data / self.noise_std**2 if self.task == "regression" else self.n_data


@dataclass
class ElboHistory:
    """Per epoch: the ELBO and its two terms (nats), Monte-Carlo estimates over that epoch's batches."""

    elbo: list[float] = field(default_factory=list)
    expected_log_likelihood: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


class _Variational:
    """The variational parameters ``μ``, ``s`` of every covered parameter, and the sampled forward."""

    def __init__(self, model: nn.Module, units: list[Unit], diagonal: dict[str, Tensor], settings: VariationalSettings):
        self.model = model
        self.settings = settings
        self.tau = settings.prior_precision
        self.names = [n for u in units for n in u.param_names]
        params = dict(model.named_parameters())
        floor = _FLOOR * self.tau / settings.n_eff
        self.mean = {n: params[n].detach().clone().requires_grad_(True) for n in self.names}
        self.log_d = {n: diagonal[n].detach().to(params[n]).clamp_min(floor).log().requires_grad_(True)
                      for n in self.names}
        # Linear/Conv units of one module (not tied): their outputs get the local reparameterisation.
        self.local = {u.name: u for u in units if isinstance(u.module, _LOCAL_TYPES) and not u.members}
        local_names = {n for u in self.local.values() for n in u.param_names}
        self.sampled = [n for n in self.names if n not in local_names]

    def variance(self, name: str) -> Tensor:
        return 1.0 / (self.settings.n_eff * self.log_d[name].exp() + self.tau)

    def kl(self) -> Tensor:
        """``KL(q ‖ N(0, 1/τ))`` summed over every covered parameter (float64)."""
        total = torch.zeros((), dtype=torch.float64, device=self.mean[self.names[0]].device)
        for n in self.names:
            tv = self.tau * self.variance(n).double()
            total = total + 0.5 * (tv + self.tau * self.mean[n].double().square() - 1 - tv.log()).sum()
        return total

    def leaves(self) -> list[Tensor]:
        return [*self.mean.values(), *self.log_d.values()]

    def _noise(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.settings.generator, device=like.device, dtype=like.dtype)

    @contextmanager
    def local_noise(self) -> Iterator[None]:
        """Forward hooks adding ``sqrt(x² σ_W²ᵀ + σ_b²) · ε`` to each local unit's output."""
        handles = [u.module.register_forward_hook(self._hook(u)) for u in self.local.values()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, unit: Unit):
        weight = unit.param_names[0]
        bias = unit.param_names[1] if len(unit.param_names) == 2 else None

        def add_noise(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            x = args[0]
            var_b = self.variance(bias) if bias is not None else None
            if isinstance(module, nn.Linear):
                var = F.linear(x.square(), self.variance(weight), var_b)
            else:
                var = cast(Any, module)._conv_forward(x.square(), self.variance(weight), var_b)  # a Conv1d/2d
            # clamped so that an output no input reaches (var = 0) gets a zero, not an infinite, gradient
            return output + var.clamp_min(torch.finfo(var.dtype).tiny).sqrt() * self._noise(output)

        return add_noise

    def sample_forward(self, x: Tensor) -> Tensor:
        """One Monte-Carlo sample of the network's output on ``x``."""
        weights = {n: self.mean[n] for n in self.local_names()}
        for n in self.sampled:
            weights[n] = self.mean[n] + self.variance(n).sqrt() * self._noise(self.mean[n])
        with self.local_noise():
            return functional_call(self.model, weights, (x,))

    def local_names(self) -> list[str]:
        return [n for u in self.local.values() for n in u.param_names]

    def blocks(self, units: list[Unit]) -> list[MeanFieldBlock]:
        return [
            MeanFieldBlock(
                u.name, tuple(u.param_names), tuple(tuple(p.shape) for p in u.params),
                tuple(self.log_d[n].detach().exp() for n in u.param_names),
                tuple(self.mean[n].detach().clone() for n in u.param_names),
            )
            for u in units
        ]


def _nll_sum(out: Tensor, y: Tensor, settings: VariationalSettings) -> Tensor:
    """``−Σ_n log p(y_n | out_n)`` of one batch (float64), the likelihood the Laplace files use."""
    if settings.task == "regression":
        return gaussian_nll_sum(regression_residual(out, y), settings.noise_std)
    return categorical_nll_sum(out, y).double()


def fit_mean_field(
    model: nn.Module,
    units: list[Unit],
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    diagonal: dict[str, Tensor],
    settings: VariationalSettings,
) -> tuple[list[MeanFieldBlock], ElboHistory]:
    """Maximise the ELBO (module docstring) from ``μ`` = the model's weights and ``d`` = ``diagonal``
    (parameter name -> the exact GGN diagonal, shaped like the parameter).

    ``batches()`` yields the same ``(inputs, targets)`` batches at every call (one epoch). The model's
    own weights are not changed. Returns one :class:`MeanFieldBlock` per unit and the ELBO per epoch.
    """
    q = _Variational(model, units, diagonal, settings)
    optimiser = torch.optim.Adam(q.leaves(), lr=settings.lr)
    steps_per_epoch = sum(1 for _ in batches())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, settings.epochs * steps_per_epoch))
    history = ElboHistory()
    with eval_mode(model):  # dropout off, norm layers on their running statistics, as in every command
        for _ in range(settings.epochs):
            log_lik, count = 0.0, 0
            for x, y in batches():
                optimiser.zero_grad(set_to_none=True)
                nll = cast(Tensor, sum(_nll_sum(q.sample_forward(x), y, settings) for _ in range(settings.mc_samples)))
                nll = nll / settings.mc_samples
                kl = q.kl()
                loss = (settings.n_data / len(x) * nll + kl) / settings.n_data  # −ELBO / N: steps independent of N
                loss.backward()
                optimiser.step()
                schedule.step()
                log_lik -= float(nll.detach())
                count += len(x)
                if settings.on_batch is not None:
                    settings.on_batch(len(x))
                if settings.on_status is not None:
                    ell = settings.n_data / count * log_lik
                    kl_value = float(kl.detach())
                    settings.on_status(f"ELBO {ell - kl_value:,.5g} = E log p {ell:,.5g} − KL {kl_value:,.5g}")
            ell = settings.n_data / max(1, count) * log_lik
            with torch.no_grad():
                kl_end = float(q.kl())
            history.expected_log_likelihood.append(ell)
            history.kl.append(kl_end)
            history.elbo.append(ell - kl_end)
    if not all(math.isfinite(v) for v in history.elbo):
        raise UserError(f"the variational fit diverged (ELBO {history.elbo[-1]}); lower {{param}}", param="lr")
    return q.blocks(units), history
