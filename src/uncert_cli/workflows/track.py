"""How each layer's uncertainty changes over training: fit every checkpoint of a run, compare layers.

Each checkpoint is fitted in memory with the same method, data and prior (no factor files are
written), and summarised with :func:`uncert_cli.analysis.layer_stats.analyse_posterior`;
:func:`track_checkpoints` is ``uncert track`` in one call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from uncert_cli.analysis.layer_stats import LayerStats, analyse_posterior
from uncert_cli.checkpoint import LoadedModel
from uncert_cli.core.errors import UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.data import ArrayDataset
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.storage.factor_file import PriorSettings
from uncert_cli.storage.opening import apply_posterior_means
from uncert_cli.workflows.fit import DEFAULT_EPOCHS, FitOptions, fit_laplace
from uncert_cli.workflows.fit_checkpoints import CheckpointLoading, FitData, check_checkpoints_exist, read_and_compare
from uncert_cli.workflows.forward_check import check_model_runs
from uncert_cli.workflows.inputs import load_model_data

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


def track_checkpoints(
    checkpoints: Sequence[str | Path], options: FitOptions, prior_precision: float = 1.0, *,
    data: FitData | None = None, loading: CheckpointLoading | None = None, progress: Progress = no_progress,
) -> TrackResult:
    """``uncert track``: fit every checkpoint of a run with ``options`` on one dataset and summarise each per layer.

    The checkpoints are put in training order (:func:`order_checkpoints`), each is read once and checked
    against the first before anything is fitted (:func:`check_same_architecture`; they are kept for their
    fits as ``uncert fit`` keeps several), and the data (``data``; default: the first checkpoint's dataset,
    train split) is loaded once, shaped for the first.

    Args:
        checkpoints: the checkpoints of one training run.
        options: how to fit each (the same for all).
        prior_precision: τ of every fit and summary.
        data: the data to fit on (its ``normalize`` and ``input_shape`` are not used).
        loading: how to read the checkpoints.
        progress: one bar per checkpoint.

    Returns:
        Every checkpoint's statistics, in training order.

    Raises:
        UserError: a non-positive ``prior_precision``, a missing checkpoint, or checkpoints of other inputs,
            parameters or layers (each refused before anything is fitted, layers apart).
    """
    if not prior_precision > 0:
        raise UserError(f"{{param}} must be positive, got {prior_precision}; e.g. {{param}} 1", param="prior_precision")
    check_checkpoints_exist(checkpoints, "pass the files of one training run")
    data = data or FitData()
    loading = loading or CheckpointLoading()
    ordered = order_checkpoints([Path(p) for p in checkpoints])
    kept = read_and_compare(ordered, loading, check=check_same_architecture)
    first = kept[0]
    assert first is not None  # the first is always kept
    dataset = load_model_data(
        first.meta, data.spec, split=data.split, limit=data.limit, root=data.root, download=data.download,
        split_required_by=data.split_required_by, conversion=data.conversion, model=first.module,
    )
    passes = CURVATURE_METHODS[options.method].data_passes(options.epochs or DEFAULT_EPOCHS)  # vi: 1 + epochs
    points = []
    for i, path in enumerate(ordered):
        loaded = kept[i] or loading.load(path)
        kept[i] = None  # fitted: let it go before the next one
        # The data was shaped on the first model; each other one takes it as the first does (packed token
        # arrays as keywords) and is tried on its first examples.
        check_model_runs(loaded.module, dataset)
        with progress(len(dataset) * passes, f"fit {path.name}") as advance:
            points.append(track_point(path, loaded, dataset, options, prior_precision, on_batch=advance))
    names = check_same_layers(points)
    return TrackResult(Method(options.method).value, dataset.name, len(dataset), prior_precision, names, points)
