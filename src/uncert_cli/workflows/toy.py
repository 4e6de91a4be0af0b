"""Ritter et al. (2018), Fig. 1 / App. E: predictive bands of Laplace approximations on the 1-D toy.

The 1-7-7-1 ReLU network (``sample_models/toy_regression_mlp.safetensors``, noise σ = 3) fitted to the
20 training points of ``toy-regression`` (y = x³ + ε). For each structure (``kfac``, ``diag``,
``full`` by default) the posterior is built twice: with the fit's defaults (N = 20, τ = 1) and with
(N, τ) chosen on the 20 ``val`` points by :func:`~uncert_cli.posterior.tune_val_nll` (Ritter §3.4).
The predictive mean and standard deviation (observation noise included) are evaluated on a grid over
x ∈ [-6, 6]. An HMC reference is drawn when ``pyro-ppl`` is installed (optional extra ``hmc``).
Numbers only; :mod:`uncert_cli.render.plots_toy` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from uncert_cli.checkpoint import LoadedModel
from uncert_cli.core.atomic import check_output_path
from uncert_cli.core.errors import UserError
from uncert_cli.data import ArrayDataset, adapt_to_model, load_dataset
from uncert_cli.posterior import LaplacePosterior, predictives, tune_val_nll
from uncert_cli.samples import sample_path
from uncert_cli.workflows.fit import METHODS, FitOptions, fit_laplace
from uncert_cli.workflows.inputs import load_checkpoint_model

DEFAULT_METHODS = ("kfac", "diag", "full")
# The toy network ships inside the package (1 KiB), so `uncert toy` works from any folder; it is the
# same file as sample_models/toy_regression_mlp.safetensors (sample_models/train.py writes both).
DEFAULT_CHECKPOINT = sample_path("toy_regression_mlp.safetensors")
N_GRID_FACTORS = (1, 2, 5, 10, 20, 50, 100)  # N candidates for tuning, as multiples of the train size


@dataclass
class ToyCurve:
    """Predictive on the grid: ``mean``/``std`` (G,), ``std`` including the observation noise."""

    label: str
    method: str
    tuned: bool
    prior_precision: float | None
    n_data: float | None
    val_nll: float | None
    mean: list[float]
    std: list[float]
    functional_std: list[float]  # without the observation noise


@dataclass
class ToyResult:
    """The toy's bands: one curve per structure and setting, the training points and the HMC reference."""
    x: list[float]
    truth: list[float]
    train: tuple[list[float], list[float]]
    val: tuple[list[float], list[float]]
    noise_std: float
    predictive: str
    curves: list[ToyCurve]
    reference: ToyCurve | None = None
    reference_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The result as the JSON document ``uncert toy --json`` prints."""
        return asdict(self)


def _points(ds: ArrayDataset) -> tuple[list[float], list[float]]:
    return ds.inputs.reshape(-1).tolist(), ds.targets.reshape(-1).tolist()


def _grid_inputs(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    meta = loaded.meta
    mean = torch.tensor(meta.normalize_mean or (0.0,), dtype=torch.float64)
    std = torch.tensor(meta.normalize_std or (1.0,), dtype=torch.float64)
    return ((x - mean) / std).reshape(-1, 1)


def _curve(post: LaplacePosterior, grid: torch.Tensor, label: str, method: str, tuned: bool,
           kind: str, samples: int, seed: int, val_nll: float | None) -> ToyCurve:
    gen = torch.Generator().manual_seed(seed)
    mean, var = cast(tuple[torch.Tensor, torch.Tensor], post.predict(grid, kind, samples=samples, generator=gen))
    fvar = (var - post.noise_std**2).clamp_min(0)
    return ToyCurve(
        label=label, method=method, tuned=tuned,
        prior_precision=float(next(iter(post.prior_precision.values()))), n_data=float(post.n_data),
        val_nll=val_nll, mean=mean.reshape(-1).tolist(), std=var.reshape(-1).sqrt().tolist(),
        functional_std=fvar.reshape(-1).sqrt().tolist(),
    )


def parse_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """The structures to draw: ``"kfac,diag"`` or a sequence of names, each one of ``fit``'s methods.

    Returns:
        The names, in the order given.

    Raises:
        UserError: no name, or a name that is not a method (naming ``methods``).
    """
    given = methods.split(",") if isinstance(methods, str) else list(methods)
    chosen = tuple(m.strip() for m in given if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise UserError(f"unknown method(s) {', '.join(bad) or repr(methods)} in {{param}}; use {', '.join(METHODS)}",
                        param="methods")
    return chosen


def toy_from_checkpoint(
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    *,
    outputs: Sequence[str | Path] = (),
    methods: str | Sequence[str] = DEFAULT_METHODS,
    predictive: str = "mc",
    samples: int = 500,
    tune: bool = True,
    hmc_samples: int = 500,
    seed: int = 0,
) -> ToyResult:
    """:func:`run_toy` on the checkpoint at ``checkpoint`` (default: the shipped toy network).

    ``outputs``: the files the caller will write from the result, checked before the minutes of fitting
    (a missing folder, or the checkpoint itself). ``methods``: as :func:`parse_methods` reads them. The
    other arguments are :func:`run_toy`'s.

    Returns:
        The bands, as :func:`run_toy` returns them.

    Raises:
        UserError: unknown methods, a missing checkpoint, an output that cannot be written, or a checkpoint
            that is not a 1-D regression.
    """
    chosen = parse_methods(methods)
    if not Path(checkpoint).exists():
        raise UserError(f"no such checkpoint: {checkpoint}; pass the toy model, e.g. {DEFAULT_CHECKPOINT}")
    loaded = load_checkpoint_model(checkpoint)
    for output in outputs:
        check_output_path(output)
    return run_toy(loaded, methods=chosen, predictive=predictive, samples=samples, tune=tune, hmc_samples=hmc_samples,
                   seed=seed)


def run_toy(
    loaded: LoadedModel,
    *,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    predictive: str = "mc",
    samples: int = 500,
    grid_points: int = 241,
    tune: bool = True,
    hmc_samples: int = 500,
    seed: int = 0,
) -> ToyResult:
    """Fit each structure on the toy's train split and evaluate its predictive on x ∈ [-6, 6]."""
    meta = loaded.meta
    if meta.task != "regression" or meta.input_shape != (1,) or meta.num_outputs != 1:
        raise UserError("uncert toy needs a 1-D regression checkpoint (1 input, 1 output), "
                        "e.g. sample_models/toy_regression_mlp.safetensors")
    toy_kinds = predictives.kinds(lambda p: p.uses_laplace and p.regression)  # mc and glm
    if predictive not in toy_kinds:
        raise UserError(f"{{param}} must be {' or '.join(toy_kinds)} for the toy, got {predictive!r}", param="predictive")
    norm = None
    if meta.normalize_mean is not None and meta.normalize_std is not None:
        norm = (meta.normalize_mean, meta.normalize_std)
    train = adapt_to_model(load_dataset("toy-regression", split="train"), meta.input_shape, normalize=norm)
    val = adapt_to_model(load_dataset("toy-regression", split="val"), meta.input_shape, normalize=norm)
    raw_train = load_dataset("toy-regression", split="train")
    raw_val = load_dataset("toy-regression", split="val")
    noise = float(meta.noise_std or 1.0)
    loaded.module.double()
    x = torch.linspace(-6, 6, grid_points, dtype=torch.float64)
    grid = _grid_inputs(loaded, x)
    val_batches = [(val.inputs.double(), val.targets.double())]
    curves: list[ToyCurve] = []
    for method in methods:
        fit = fit_laplace(loaded, train, FitOptions(method=method, dtype=torch.float64, batch_size=64))
        post = LaplacePosterior(fit.curvature, loaded.module, prior_precision=1.0, noise_std=noise)
        name = {"kfac": "KFAC", "diag": "Diag", "full": "Full"}.get(method, method)
        curves.append(_curve(post, grid, f"{name} Laplace", method, False, predictive, samples, seed, None))
        if tune:
            n0 = float(fit.curvature.n_data)
            res = tune_val_nll(
                post, val_batches, kind=predictive, n_grid=[n0 * f for f in N_GRID_FACTORS],
                samples=min(samples, 200), generator=torch.Generator().manual_seed(seed),
            )
            tuned = res.apply(post)
            curves.append(_curve(tuned, grid, f"{name} Laplace, tuned", method, True, predictive, samples, seed,
                                 res.objective))
    reference, note = hmc_reference(loaded, train, grid, noise, hmc_samples, seed)
    return ToyResult(
        x=x.tolist(), truth=(x**3).tolist(), train=_points(raw_train), val=_points(raw_val), noise_std=noise,
        predictive=predictive, curves=curves, reference=reference, reference_note=note,
    )


def hmc_reference(loaded: LoadedModel, train: ArrayDataset, grid: torch.Tensor, noise: float,
                  n_samples: int, seed: int, prior_precision: float = 1.0) -> tuple[ToyCurve | None, str]:
    """NUTS samples of the same network under the prior N(0, 1/τ) (pyro-ppl); ``(None, why)`` without it."""
    try:
        import pyro  # noqa: F401
        from pyro.infer import MCMC, NUTS
    except ImportError:
        return None, "HMC reference not drawn: pyro-ppl is not installed (pip install pyro-ppl)"
    from torch.func import functional_call

    model = loaded.module
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    x, y = train.inputs.double(), train.targets.double().reshape(-1)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        theta = params["theta"]
        f = functional_call(model, unflatten(theta), (x,)).reshape(-1)
        return 0.5 * ((f - y) ** 2).sum() / noise**2 + 0.5 * prior_precision * (theta**2).sum()

    torch.manual_seed(seed)
    try:
        kernel = NUTS(potential_fn=potential)
        mcmc = MCMC(kernel, num_samples=n_samples, warmup_steps=n_samples, initial_params={"theta": start},
                    disable_progbar=True)  # pyro's tqdm bar would flood stderr; the command reports the result
        mcmc.run()
        thetas = mcmc.get_samples()["theta"]
    except Exception as exc:  # noqa: BLE001 - the reference is optional; say why it is missing
        return None, f"HMC reference failed: {type(exc).__name__}: {exc}"
    with torch.no_grad():
        preds = torch.stack([functional_call(model, unflatten(t), (grid,)).reshape(-1) for t in thetas])
    mean, fvar = preds.mean(0), preds.var(0)
    curve = ToyCurve("HMC (NUTS)", "hmc", False, prior_precision, float(len(y)), None, mean.tolist(),
                     (fvar + noise**2).sqrt().tolist(), fvar.sqrt().tolist())
    return curve, f"HMC: {n_samples} NUTS samples after {n_samples} warm-up steps, τ = {prior_precision:g}"


def finite(values: list[float]) -> bool:
    """Whether every value is a finite number."""
    return all(math.isfinite(v) for v in values)
