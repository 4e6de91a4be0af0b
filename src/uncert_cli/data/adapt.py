"""Checking a dataset against a model and bringing it into the model's input form."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import Task
from uncert_cli.data.dataset import ArrayDataset, is_token_ids, to_float


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _as_image_shape(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """Read a shape as ``(C, H, W)``: as is if 3-D with C in {1, 3}, or a flat ``(C*H*H,)`` square image."""
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape[0], shape[1], shape[2]
    if len(shape) == 1:
        for channels in (1, 3):
            side = math.isqrt(shape[0] // channels)
            if shape[0] % channels == 0 and side * side * channels == shape[0] and side > 1:
                return channels, side, side
    return None


def _conversion_hint(data_shape: tuple[int, ...], model_shape: tuple[int, ...], convertible: bool) -> tuple[str, tuple[str, ...]]:
    """What to do when the per-example element counts differ, e.g. ``convert the images with {channels} 1
    {resize} 28,28`` (only where the caller can convert: ``convertible``; every command that loads data through
    :func:`uncert_cli.workflows.inputs.load_model_data` can), and the parameters the text names.
    """
    data_image, model_image = _as_image_shape(data_shape), _as_image_shape(model_shape)
    if data_image is None or model_image is None or not convertible:
        return "pick the dataset (or the file) this model was trained on", ()
    steps: dict[str, str] = {}
    if data_image[0] != model_image[0]:
        steps["channels"] = f"{{channels}} {model_image[0]}"
    if data_image[1:] != model_image[1:]:
        steps["resize"] = f"{{resize}} {model_image[1]},{model_image[2]}"
    text = "convert the images with " + " ".join(steps.values()) + ", or use the dataset the model was trained on"
    return text, tuple(steps)


def _whole_number_labels(ds: ArrayDataset) -> ArrayDataset | None:
    """``ds`` with its float targets as int64 class labels when they are one column of whole numbers ≥ 0
    (``y = [0., 1., 2.]`` saved by NumPy or torch as floats); None when they are not labels at all
    (several columns).

    Raises:
        UserError: one column of floats of which some are not whole numbers (or negative, NaN, inf).
    """
    if ds.targets.shape[1] != 1:
        return None
    values = ds.targets[:, 0]
    whole = torch.isfinite(values) & (values >= 0) & (values == values.round())
    if not bool(whole.all()):
        first = int((~whole).nonzero()[0, 0])
        raise UserError(
            f"dataset '{ds.name}' has float labels that are not class indices ({float(values[first]):g} at index "
            f"{first}) but the model is a classifier; store labels 0, 1, 2, ... (whole numbers, as integers or "
            "floats), or, if the model predicts these targets, fit with {param} regression",
            param="task",
        )
    labels = values.to(torch.int64)
    num_classes = int(labels.max()) + 1 if labels.numel() else 0
    return ArrayDataset(ds.name, ds.inputs, labels, "classification", num_classes, None, ds.split, ds.input_names)


def _check_task_and_labels(ds: ArrayDataset, num_outputs: int | None, task: str | None) -> ArrayDataset:
    """``ds`` checked against the model's task and output width; whole-number float labels become int64 for a
    classifier (the only change made).
    """
    if task is not None:
        task = Task.parse(task, "task").value
    if task == "classification" and ds.task == "regression":
        ds = _whole_number_labels(ds) or ds
    if task is not None and task != ds.task:
        if task == "classification":
            raise UserError(
                f"dataset '{ds.name}' has float targets (regression) but the model is a classifier; "
                "if the model predicts these targets, fit with {param} regression; otherwise store integer class labels",
                param="task",
            )
        raise UserError(
            f"dataset '{ds.name}' has integer class labels but the model does regression; "
            "if the model outputs class scores, fit with {param} classification; otherwise store the targets as floats",
            param="task",
        )
    check_labels(ds, num_outputs)
    return ds


def check_labels(ds: ArrayDataset, num_outputs: int | None) -> None:
    """Refuse labels (targets ``(N,)`` class indices or ``(N, D)`` values) that a model with ``num_outputs``
    outputs cannot score: a class index ≥ ``num_outputs``, or ``D`` ≠ ``num_outputs``. None: no check.

    Raises:
        UserError: the labels do not fit the model's outputs.
    """
    if num_outputs is None:
        return
    if ds.task == "classification":
        highest = int(ds.targets.max())
        if highest >= num_outputs:
            raise UserError(
                f"dataset '{ds.name}' has labels up to {highest} but the model has only {num_outputs} outputs; "
                "use the dataset the model was trained on (labels 0.."
                f"{num_outputs - 1})"
            )
    elif ds.targets.shape[1] != num_outputs:
        raise UserError(
            f"dataset '{ds.name}' has {ds.targets.shape[1]}-dimensional targets but the model has {num_outputs} outputs; "
            "use targets with one column per model output"
        )


def _first_non_finite(values: torch.Tensor) -> tuple[int, int] | None:
    """``(first example index, number of examples)`` with NaN/inf in ``values`` (N, ...), or None."""
    bad_rows = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    count = int(bad_rows.sum())
    return (int(bad_rows.nonzero()[0, 0]), count) if count else None


def _normalize(
    inputs: torch.Tensor, owns_inputs: bool, normalize: tuple[Sequence[float], Sequence[float]], ds: ArrayDataset
) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dim 1 of ``(N, C, ...)``); one mean/std applies to all channels."""
    means, stds = (torch.as_tensor(list(v), dtype=torch.float32) for v in normalize)
    channels = ds.sample_shape[0]
    if means.ndim != 1 or means.shape != stds.shape or len(means) not in (1, channels):
        raise UserError(
            f"{{param}} gives {len(means)} means and {len(stds)} stds but dataset '{ds.name}' has {channels} channels "
            f"(sample shape {_shape_text(ds.sample_shape)}); give 1 or {channels} of each",
            param="normalize",
        )
    if not bool((stds > 0).all()) or not bool(torch.isfinite(means).all() and torch.isfinite(stds).all()):
        raise UserError("{param} needs finite means and stds > 0; fix the values", param="normalize")
    broadcast_shape = (1, len(means)) + (1,) * (inputs.ndim - 2)
    means, stds = means.reshape(broadcast_shape), stds.reshape(broadcast_shape)
    if owns_inputs:  # a fresh float copy (from uint8): normalise in place, no third copy in memory
        return inputs.sub_(means).div_(stds)
    return (inputs - means).div_(stds)


def adapt_to_model(
    ds: ArrayDataset,
    input_shape: tuple[int, ...] | None,
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    num_outputs: int | None = None,
    task: str | None = None,
    convertible: bool = False,
) -> ArrayDataset:
    """Return ``ds`` checked and converted for a model: float32 inputs ``(N, *input_shape)``, normalised.

    Args:
        ds: the dataset as loaded.
        input_shape: the model's per-example input shape, e.g. ``(1, 28, 28)`` or ``(784,)``; None keeps
            the dataset's. Any shape with the same number of elements is reached by reshaping (C order).
        normalize: ``(means, stds)`` applied per channel (dim 0 of the sample shape, before reshaping)
            as ``(x - mean) / std``; a single mean/std applies to all channels.
        num_outputs: the model's output width. Classification labels must be < ``num_outputs``;
            regression targets must have ``num_outputs`` columns. Pass None where labels do not matter
            (out-of-distribution sets).
        task: the model's task; must equal ``ds.task`` when given, except that a classifier's labels may be
            stored as whole-number floats (``0., 1., 2.``), which become int64 class labels.
        convertible: the caller can convert images (``channels``, ``resize``), so a shape mismatch
            suggests them; elsewhere it suggests the model's own dataset.

    Raises:
        UserError: empty dataset, task mismatch, labels out of range, element-count mismatch, NaN/inf.

    The result never shares memory with ``ds.inputs`` when normalising; without normalisation a float32
    dataset's inputs may be a view (reshape) of the original. Targets are shared.
    """
    if len(ds) == 0:
        raise UserError(f"dataset '{ds.name}' is empty; check the file, the split, or {{limit}}", mentions=("limit",))
    ds = _check_task_and_labels(ds, num_outputs, task)

    # Packed token data reaches the model as stored: its sequence length is the data's own, and the
    # keywords it is fed as say what each row is (a recorded shape would only forbid other lengths).
    packed = ds.input_names is not None
    target_shape = ds.sample_shape if input_shape is None or packed else tuple(int(d) for d in input_shape)
    if any(d < 1 for d in target_shape):
        raise UserError(
            f"model input shape {_shape_text(target_shape)} has non-positive sizes; check the input_shape in the model's metadata"
        )
    if math.prod(target_shape) != math.prod(ds.sample_shape):
        hint, mentions = _conversion_hint(ds.sample_shape, target_shape, convertible)
        raise UserError(
            f"dataset '{ds.name}' has examples of shape {_shape_text(ds.sample_shape)} ({math.prod(ds.sample_shape)} values) "
            f"but the model expects {_shape_text(target_shape)} ({math.prod(target_shape)} values); " + hint,
            mentions=mentions,
        )

    inputs = to_float(ds.inputs)
    owns_inputs = ds.inputs.dtype == torch.uint8  # to_float made a float copy we may overwrite
    if ds.inputs.dtype == torch.float32:
        bad = _first_non_finite(inputs)
        if bad is not None:
            raise UserError(
                f"dataset '{ds.name}' has NaN or inf inputs in {bad[1]} example(s), first at index {bad[0]}; "
                "remove or fix those examples"
            )
    if ds.task == "regression":
        bad = _first_non_finite(ds.targets)
        if bad is not None:
            raise UserError(
                f"dataset '{ds.name}' has NaN or inf targets in {bad[1]} example(s), first at index {bad[0]}; "
                "remove or fix those examples"
            )
    if normalize is not None and is_token_ids(inputs):
        raise UserError(
            f"dataset '{ds.name}' holds integer token ids, which are not normalised; drop {{param}} "
            "(or store float features if the model takes them)",
            param="normalize",
        )
    if normalize is not None:
        inputs = _normalize(inputs, owns_inputs, normalize, ds)
    inputs = inputs.reshape(len(ds), *target_shape)
    return ArrayDataset(ds.name, inputs, ds.targets, ds.task, ds.num_classes, ds.class_names, ds.split, ds.input_names)
