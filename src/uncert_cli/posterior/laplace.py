"""The Laplace posterior: one object over curvature blocks of every structure.

Posterior over the parameters covered by the curvature blocks (all other parameters stay at their MAP
value): a block-diagonal Gaussian ``N(θ*, precision⁻¹)`` with, per block ``b``,

    precision_b = n_eff · curvature_b + τ_b · I,     n_eff = n_data / noise_std²  (regression)
                                                      n_eff = n_data               (classification)

(curvature is stored at unit noise). Each block is a :class:`~uncert_cli.posterior.structures.Structure`
that does its own math (``posterior.structures``). For KFAC blocks ``prior_mode`` chooses how ``τ`` enters:
``"eigen"`` is the exact ``n_eff · G ⊗ A + τ I``; ``"factor"`` is Ritter et al. (2018) eq. 9,
``(sqrt(n_eff) G + sqrt(τ) I) ⊗ (sqrt(n_eff) A + sqrt(τ) I)``. The other structures ignore ``prior_mode``.

Example::

    post = LaplacePosterior(curvature, model, prior_precision=1.0)
    probs = post.predict(x, "glm", samples=100)             # (B, C)
    tuned = tune_prior_marglik(post, log_likelihood=-123.4, structure="layer")
    post = post.with_hyperparameters(prior_precision=tuned.prior_precision)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.core.model_state import eval_mode
from uncert_cli.core.vocabulary import PredictiveKind, PriorMode
from uncert_cli.curvature.blocks import Curvature
from uncert_cli.posterior import marginals as _marginals
from uncert_cli.posterior import marglik as _marglik
from uncert_cli.posterior import output_covariance as _outcov
from uncert_cli.posterior import predictives as _predictives
from uncert_cli.posterior.predictives.base import Prediction, over_sample_chunks
from uncert_cli.posterior.sampling import SampleCache, draw_deviations
from uncert_cli.posterior.structures import Structure, structure_for

PriorPrecision = float | Mapping[str, float]
DEFAULT_KEY = "*"  # in a prior_precision mapping: the value for modules not named explicitly
TOTAL = "total"
_KEEP = object()
DEFAULT_SAMPLE_CHUNK = 16


class LaplacePosterior:
    """Post-hoc Laplace posterior built from curvature blocks and the MAP model.

    Args:
        curvature: the blocks of any method (``curvature.blocks``), means over the data.
        model: the network holding the MAP weights (used in place; its train/eval flags are restored
            after each prediction).
        prior_precision: ``τ``; a float for all blocks or a mapping ``{module: τ}`` (``"*"`` = default).
        n_data: ``N`` multiplying the mean curvature; defaults to ``curvature.n_data``.
        prior_mode: ``"eigen"`` or ``"factor"`` (KFAC blocks only).
        noise_std: observation noise ``σ`` (regression only; must stay 1.0 for classification).
    """

    def __init__(
        self,
        curvature: Curvature,
        model: nn.Module,
        *,
        prior_precision: PriorPrecision = 1.0,
        n_data: float | None = None,
        prior_mode: PriorMode | str = PriorMode.eigen,
        noise_std: float = 1.0,
    ) -> None:
        if not curvature.blocks:
            raise UserError("the curvature has no blocks; compute it for a model with trainable layers")
        if curvature.task not in ("classification", "regression"):
            raise UserError(f"unknown task '{curvature.task}'; use 'classification' or 'regression'")
        self.curvature = curvature
        self.model = model
        params: dict[str, Tensor] = dict(model.named_parameters())
        self._specs: tuple[Structure, ...] = tuple(structure_for(b, params) for b in curvature.blocks)
        seen: set[str] = set()
        for spec in self._specs:
            for name in spec.param_names:
                if name in seen:
                    raise UserError(f"parameter '{name}' appears in two curvature blocks; recompute the curvature")
                seen.add(name)
        modules = [s.module for s in self._specs]
        if len(set(modules)) != len(modules):
            raise UserError("two curvature blocks have the same module name; recompute the curvature")
        self.map_parameters: dict[str, Tensor] = {
            n: params[n].detach() for s in self._specs for n in s.param_names
        }
        # ‖θ*_b‖² per block (the evidence's prior term), in float64
        self.map_sq_norms: tuple[float, ...] = tuple(
            float(sum(self.map_parameters[n].double().square().sum() for n in s.param_names)) for s in self._specs
        )
        self.sample_chunk = DEFAULT_SAMPLE_CHUNK  # samples per vmapped network evaluation
        self._vmap_state: dict[str, bool] = {}
        self._fast_units: dict[str, object] = {}  # shared with with_hyperparameters copies
        self._set_hyperparameters(
            prior_precision, curvature.n_data if n_data is None else n_data, noise_std, prior_mode
        )

    # ------------------------------------------------------------------ hyperparameters
    def _set_hyperparameters(self, prior_precision, n_data, noise_std, prior_mode) -> None:
        prior_mode = PriorMode.parse(prior_mode, "prior_mode")
        n_data = _positive("n_data", n_data)
        noise_std = _positive("noise_std", noise_std)
        if self.task == "classification" and noise_std != 1.0:
            raise UserError("noise_std applies to regression only; leave it at 1.0 for classification")
        self.prior_mode: PriorMode = prior_mode
        self.n_data = n_data
        self.noise_std = noise_std
        self._taus = self._resolve_prior(prior_precision)
        self._prec = tuple(s.precision(t, self.n_eff, prior_mode) for s, t in zip(self._specs, self._taus))
        self._cache = SampleCache()

    def _resolve_prior(self, prior_precision: PriorPrecision) -> tuple[float, ...]:
        modules = [s.module for s in self._specs]
        if isinstance(prior_precision, Mapping):
            unknown = sorted(set(prior_precision) - set(modules) - {DEFAULT_KEY})
            if unknown:
                raise UserError(
                    f"prior precision given for unknown module(s) {', '.join(map(repr, unknown))}; "
                    f"use module names from the curvature: {', '.join(map(repr, modules))}"
                )
            missing = [m for m in modules if m not in prior_precision and DEFAULT_KEY not in prior_precision]
            if missing:
                raise UserError(
                    f"no prior precision for module(s) {', '.join(map(repr, missing))}; give one per module "
                    f"or a default under '{DEFAULT_KEY}'"
                )
            values = [prior_precision.get(m, prior_precision.get(DEFAULT_KEY)) for m in modules]
        else:
            values = [prior_precision] * len(modules)
        return tuple(_positive("prior_precision", v) for v in values)

    def with_hyperparameters(
        self, *, prior_precision=_KEEP, n_data=_KEEP, noise_std=_KEEP, prior_mode=_KEEP
    ) -> LaplacePosterior:
        """A posterior with other hyperparameters, sharing model, curvature and eigendecompositions."""
        new = object.__new__(LaplacePosterior)
        new.__dict__.update(self.__dict__)
        new._set_hyperparameters(
            self.prior_precision if prior_precision is _KEEP else prior_precision,
            self.n_data if n_data is _KEEP else n_data,
            self.noise_std if noise_std is _KEEP else noise_std,
            self.prior_mode if prior_mode is _KEEP else prior_mode,
        )
        return new

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``, as the curvature was fitted."""
        return self.curvature.task

    @property
    def n_eff(self) -> float:
        """``n_data / noise_std²`` (regression) or ``n_data`` (classification)."""
        return self.n_data / self.noise_std**2

    @property
    def modules(self) -> tuple[str, ...]:
        """The covered modules' names, one per block, in network order."""
        return tuple(s.module for s in self._specs)

    @property
    def specs(self) -> tuple[Structure, ...]:
        """The posterior blocks (:class:`~uncert_cli.posterior.structures.Structure`), in network order."""
        return self._specs

    @property
    def block_precisions(self) -> tuple[object, ...]:
        """Each block's precision at the current hyperparameters, in the form its structure keeps it
        (``Structure.precision``: eigenvalues, a diagonal, a dense matrix, ...), aligned with :attr:`specs`.
        """
        return self._prec

    def precision_is_finite(self) -> bool:
        """Whether every block's precision ``n_eff·λ + τ`` is finite in the curvature's dtype.

        Returns:
            False where a huge N or τ overflows it (float32 ends at 3.4e38): every variance, sample and
            predictive would then be NaN or 0.
        """
        return all(_all_finite(state) for state in self._prec)

    @property
    def prior_precision(self) -> dict[str, float]:
        """``τ`` per block (module name)."""
        return dict(zip(self.modules, self._taus))

    @property
    def num_params(self) -> int:
        """How many parameters the blocks cover."""
        return sum(s.num_params for s in self._specs)

    def kronecker_eigens(self) -> dict[str, object]:
        """The eigendecompositions in use per Kronecker block (shared by ``with_hyperparameters``)."""
        return {s.module: s.kronecker_eigen for s in self._specs if s.kronecker_eigen is not None}

    # ------------------------------------------------------------------ marginals
    def marginal_variance(self) -> dict[str, Tensor]:
        """Posterior variance of every covered parameter, same shape as the parameter."""
        return _marginals.parameter_variances(self._specs, self._prec)

    def prior_variance(self) -> dict[str, float]:
        """Prior variance ``1/τ`` of every covered parameter (by parameter name)."""
        return {n: 1.0 / t for s, t in zip(self._specs, self._taus) for n in s.param_names}

    def functional_variance(self, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
        """``diag(J(x) Σ J(x)ᵀ)`` of the network outputs, ``(B, C)``, without the noise term."""
        with eval_mode(self.model):
            return _marginals.functional_variance(
                self.model, self.map_parameters, self._specs, self._prec, x, chunk_size=chunk_size
            )

    @property
    def has_factored_outputs(self) -> bool:
        """Whether :meth:`output_covariance` applies (every block a Linear/Conv Kronecker or diagonal one)."""
        if "units" not in self._fast_units:
            self._fast_units["units"] = _outcov.supported(self.model, self._specs)
        return self._fast_units["units"] is not None

    def output_covariance(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """MAP outputs and ``J(x) Σ J(x)ᵀ`` by the factored Linear/Conv path (:mod:`~uncert_cli.posterior.output_covariance`).

        Args:
            x: a batch of inputs, ``(B, ...)``.

        Returns:
            ``(f, J Σ Jᵀ)`` of shapes ``(B, C)`` and ``(B, C, C)``, or None where a block needs the generic path.
        """
        result = self.output_covariances(x, [self])
        return None if result is None else (result[0], result[1][0])

    def output_covariances(
        self, x: Tensor, variants: Sequence[LaplacePosterior]
    ) -> tuple[Tensor, list[Tensor]] | None:
        """:meth:`output_covariance` of each of ``variants`` in one pass over ``x``.

        Args:
            x: a batch of inputs, ``(B, ...)``.
            variants: this posterior under other hyperparameters (from :meth:`with_hyperparameters`).

        Returns:
            ``(f (B, C), [J Σ_v Jᵀ (B, C, C) per variant])``, or None where a block needs the generic path.

        Raises:
            ValueError: a variant does not share this posterior's blocks.
        """
        if not self.has_factored_outputs:
            return None
        if any(v._specs is not self._specs for v in variants):
            raise ValueError("output_covariances: every variant must come from with_hyperparameters of this posterior")
        units = self._fast_units["units"]
        grid = [v._prec for v in variants]
        with eval_mode(self.model):
            # One example's sizes bound the examples per backward; they change with its shape (token lengths).
            known = cast("dict[tuple[int, ...], _outcov.OutputSizes]", self._fast_units.setdefault("sizes_by_shape", {}))
            sizes = known.get(tuple(x.shape[1:]))
            if sizes is None:
                sizes = known[tuple(x.shape[1:])] = _outcov.output_sizes(self.model, units, x)  # type: ignore[arg-type]
            result = _outcov.output_covariances(
                self.model, units, self._specs, grid, x, sizes  # type: ignore[arg-type]
            )
            if result is None:  # a layer input without a batch dimension: not for this model
                self._fast_units["units"] = None
                return None
            if x.shape[0] > 1 and "checked" not in self._fast_units:
                # The factored path takes the first input dimension of batch size as the example index. A layer that
                # sees (sequence, batch, ...) with sequence length == batch size would pass its shape
                # check; one example alone cannot, so the first batch is checked against its first row.
                single = _outcov.output_covariance(
                    self.model, units, self._specs, grid[0], x[:1], sizes  # type: ignore[arg-type]
                )
                self._fast_units["checked"] = True
                # Loose enough for GPU kernels that differ with the batch size (TF32 convolutions),
                # tight enough for a layout error (~10% on the tests' sequence-first model).
                rtol = 1e-4 if x.device.type == "cpu" else 2e-2
                first = result[1][0]
                scale = float(first[0].abs().max())
                if single is None or not torch.allclose(single[1][0], first[0], rtol=rtol, atol=rtol * scale + 1e-12):
                    self._fast_units["units"] = None
                    return None
            return result

    # ------------------------------------------------------------------ sampling
    def sample(self, n_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n_samples`` posterior draws of every covered parameter (MAP + deviation).

        Args:
            n_samples: ``S``, a positive integer.
            generator: the random generator (CPU or the parameters' device); torch's global one when None.

        Returns:
            Parameter name to its draws, ``(S, *param_shape)``.

        Raises:
            UserError: ``n_samples`` is not a positive integer.
        """
        if not isinstance(n_samples, int) or n_samples < 1:
            raise UserError(f"n_samples must be a positive integer, got {n_samples!r}")
        dev = draw_deviations(self._specs, self._prec, n_samples, generator)
        return {n: self.map_parameters[n] + d for n, d in dev.items()}

    def iter_samples(self, n_samples: int, generator: torch.Generator | None = None) -> Iterator[dict[str, Tensor]]:
        """Like :meth:`sample`, one parameter dict per sample (for ``functional_call``).

        Yields:
            Parameter name to one draw, ``param_shape``.
        """
        batch = self.sample(n_samples, generator)
        for i in range(n_samples):
            yield {n: v[i] for n, v in batch.items()}

    def deviations(self, n_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The deviations ``θ − θ*`` the sampled predictives use.

        They are drawn once per ``(n_samples, generator.initial_seed())`` (seed 0 without a generator) and kept,
        so every batch and call sees the same samples; the same numbers as :meth:`sample` with a fresh
        generator of that seed.

        Returns:
            Parameter name to its deviations, ``(S, *param_shape)``.
        """
        return self._cache.get(self._specs, self._prec, n_samples, generator)

    def map_over_samples(self, fn, per_sample: dict[str, Tensor]) -> Tensor:
        """``fn(slice)`` for each sample's slice of ``per_sample`` (each ``(S, *shape)``).

        vmapped over :attr:`sample_chunk` samples at a time, one by one for a model vmap cannot run
        (remembered for this posterior and its :meth:`with_hyperparameters` copies).

        Returns:
            The results stacked, ``(S, ...)``.
        """
        return over_sample_chunks(fn, per_sample, self.sample_chunk, self._vmap_state)

    @property
    def slow_paths(self) -> dict[str, bool]:
        """Which fast routes failed on this model (``"vmap"``, ``"forward_ad"``: ``False`` once they did),
        shared with :meth:`with_hyperparameters` copies so that each fallback is found once.
        """
        return self._vmap_state

    # ------------------------------------------------------------------ evidence & friends
    def log_det_precision(self) -> dict[str, float]:
        """``log det`` of each block's precision (by module) and their sum under ``"total"``."""
        lds = _marglik.block_log_dets(self._specs, self._taus, self.n_eff, self.prior_mode)
        out = {s.module: float(ld) for s, ld in zip(self._specs, lds)}
        out[TOTAL] = sum(out[s.module] for s in self._specs)
        return out

    def entropy(self) -> dict[str, float]:
        """Gaussian entropy ``½ (P (1 + log 2π) − log det precision)`` per block and ``"total"``."""
        lds = self.log_det_precision()
        out = {s.module: _marglik.block_entropy(s.num_params, lds[s.module]) for s in self._specs}
        out[TOTAL] = sum(out[s.module] for s in self._specs)
        return out

    def effective_params(self) -> dict[str, float]:
        """Effective number of parameters ``γ = Σ λ/(λ+τ)`` per block and ``"total"``."""
        out = {
            s.module: _marglik.block_effective_params(s, t, self.n_eff, self.prior_mode)
            for s, t in zip(self._specs, self._taus)
        }
        out[TOTAL] = sum(out[s.module] for s in self._specs)
        return out

    def log_marginal_likelihood(self, log_likelihood: float) -> float:
        """Laplace log evidence; ``log_likelihood = Σ_n log p(y_n | x_n, θ*)`` at the current ``noise_std``.

        ``log Z = log_likelihood − ½ Σ τ_b ||θ*_b||² + ½ Σ P_b log τ_b − ½ log det(precision)``: the
        ``log 2π`` terms of prior and Gaussian integral cancel, so no constant is dropped (see ``marglik``).

        Returns:
            ``log Z`` at the current hyperparameters.

        Raises:
            UserError: ``log_likelihood`` is not finite.
        """
        if not math.isfinite(log_likelihood):
            raise UserError(f"log_likelihood must be a finite number, got {log_likelihood!r}")
        return float(
            _marglik.log_marginal_likelihood(
                float(log_likelihood), self._specs, self.map_sq_norms, self._taus, self.n_eff, self.prior_mode
            )
        )

    # ------------------------------------------------------------------ prediction
    def predict(
        self, x: Tensor, kind: PredictiveKind | str = PredictiveKind.glm, *, samples: int = 100,
        generator: torch.Generator | None = None,
    ) -> Prediction:
        """Predictive for a batch ``x``.

        Classification: class probabilities ``(B, C)``. Regression: ``(mean, variance)``, both ``(B, D)``,
        the variance including the observation noise ``noise_std²``. See ``posterior.predictives`` for
        the kinds; sampled kinds reuse one set of ``samples`` draws per ``generator.initial_seed()``
        (seed 0 without a generator) across calls and batches.

        Returns:
            The probabilities, or the ``(mean, variance)`` pair, on ``x``'s device.
        """
        device = self.device
        if x.device == device:
            return _predictives.predict(self, x, kind, samples, generator)
        # Callers iterate data on the CPU; compute where the posterior lives, answer where they are.
        out = _predictives.predict(self, x.to(device), kind, samples, generator)
        if isinstance(out, tuple):
            mean, variance = out
            return mean.to(x.device), variance.to(x.device)
        return out.to(x.device)

    @property
    def device(self) -> torch.device:
        """Where the MAP weights (and so every computation of this posterior) live."""
        return next(iter(self.map_parameters.values())).device

    def __repr__(self) -> str:
        return (
            f"LaplacePosterior(method={self.curvature.method}, task={self.task}, blocks={len(self._specs)}, "
            f"params={self.num_params}, n_data={self.n_data:g}, prior_mode={self.prior_mode}, "
            f"noise_std={self.noise_std:g})"
        )


def _all_finite(state: object) -> bool:
    """Every number in a block's precision state (a tensor, or a structure's dataclass of tensors) is finite."""
    if isinstance(state, Tensor):
        return bool(torch.isfinite(state).all())
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return all(_all_finite(getattr(state, f.name)) for f in dataclasses.fields(state))
    if isinstance(state, (tuple, list)):
        return all(_all_finite(part) for part in state)
    return True


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise UserError(f"{name} must be a positive finite number, got {value!r}")
    return v
