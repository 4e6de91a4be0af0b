"""How each layer's uncertainty changes over training: fit every checkpoint of a run, compare layers.

Each checkpoint is fitted in memory with the same method, data and prior (no factor files are
written), and summarised with :func:`uncert_cli.analysis.layer_stats.analyse_posterior`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from uncert_cli.analysis.layer_stats import LayerStats, analyse_posterior
from uncert_cli.checkpoint import LoadedModel
from uncert_cli.core.errors import UserError
from uncert_cli.data import ArrayDataset
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.storage.factor_file import PriorSettings
from uncert_cli.storage.opening import apply_posterior_means
from uncert_cli.workflows.fit import FitOptions, fit_laplace

_STEP = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a file name


@dataclass
class TrackPoint:
    """One checkpoint's step and its per-layer statistics."""
    checkpoint: str
    step: int | None  # epoch/step parsed from the file name (the last number in it), if any
    map_accuracy: float | None
    effective_params: float  # whole network
    layers: list[LayerStats]


@dataclass
class TrackResult:
    """The statistics of every checkpoint of a run, in training order."""
    method: str
    dataset: str
    n_data: int
    prior_precision: float
    layer_names: list[str]
    points: list[TrackPoint]


def checkpoint_step(path: str | Path) -> int | None:
    """``lenet_epoch8.safetensors`` -> 8; ``None`` when the name holds no number."""
    match = _STEP.search(Path(path).stem)
    return int(match.group(1)) if match else None


def order_checkpoints(paths: Sequence[Path]) -> list[Path]:
    """By the number in their names when every name has one (so epoch10 follows epoch2), else as given."""
    steps = [checkpoint_step(p) for p in paths]
    if all(s is not None for s in steps):
        return [p for _, p in sorted(zip(steps, paths), key=lambda pair: pair[0])]  # type: ignore[arg-type, return-value]
    return list(paths)


def track_point(path: Path, loaded: LoadedModel, data: ArrayDataset, options: FitOptions, prior_precision: float,
                *, on_batch: Callable[[int], None] | None = None) -> TrackPoint:
    """Fit one checkpoint in memory and summarise its posterior per layer."""
    # a method that trains (vi) fits with the τ the summary uses, and its own mean is the posterior's "MAP"
    result = fit_laplace(loaded, data, options, on_batch=on_batch, prior=PriorSettings(prior_precision=prior_precision))
    apply_posterior_means(loaded.module, result.curvature)
    posterior = LaplacePosterior(result.curvature, loaded.module, prior_precision=prior_precision)
    report = analyse_posterior(posterior, loaded.meta.input_shape)
    return TrackPoint(
        checkpoint=str(path),
        step=checkpoint_step(path),
        map_accuracy=result.info.get("map_accuracy"),
        effective_params=report.effective_params,
        layers=report.layers,
    )


def check_same_layers(points: Sequence[TrackPoint]) -> list[str]:
    """The common layer names; checkpoints of one run must have the same layers."""
    names = [layer.name for layer in points[0].layers]
    for point in points[1:]:
        other = [layer.name for layer in point.layers]
        if other != names:
            raise UserError(
                f"'{point.checkpoint}' has layers {other}, but '{points[0].checkpoint}' has {names}; "
                "track checkpoints of one architecture"
            )
    return names


def check_same_architecture(first: LoadedModel, other: LoadedModel, first_path: Path, other_path: Path) -> None:
    """Refuse, before any fitting, checkpoints whose input shape or parameters differ from the first's:
    they share one dataset (shaped for the first) and one set of layer rows.

    Raises:
        UserError: a checkpoint's input shape or parameters differ from the first one's.
    """
    def signature(loaded: LoadedModel) -> tuple:
        params = [(n, tuple(p.shape)) for n, p in loaded.module.named_parameters()]
        return tuple(loaded.meta.input_shape or ()), params

    (shape_a, params_a), (shape_b, params_b) = signature(first), signature(other)
    if shape_a != shape_b:
        raise UserError(
            f"'{other_path}' takes inputs of shape {shape_b} but '{first_path}' takes {shape_a}; "
            "track checkpoints of one architecture"
        )
    if params_a != params_b:
        differ = next(((a, b) for a, b in zip(params_a, params_b) if a != b), None)
        detail = f" (first difference: {differ[1][0]} {differ[1][1]} vs {differ[0][0]} {differ[0][1]})" if differ else ""
        raise UserError(
            f"'{other_path}' has other parameters than '{first_path}'{detail}; track checkpoints of one architecture"
        )
