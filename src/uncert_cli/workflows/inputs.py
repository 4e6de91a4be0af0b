"""Load what a command works on: the model from a checkpoint, the data adapted to that model.

Every subcommand that touches a checkpoint or a dataset goes through these two functions, so all of
them understand the same options and fail with the same messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uncert_cli.checkpoint import LoadedModel, ModelMeta, load_model, parse_arch_kwargs
from uncert_cli.checkpoint.hf_folder import tokenizer_folder
from uncert_cli.checkpoint.keyword_inputs import feed_keyword_inputs
from uncert_cli.checkpoint.outputs import parse_output_choice
from uncert_cli.core.errors import UserError
from uncert_cli.core.slow_path import out_of_memory
from uncert_cli.data import ArrayDataset, ImageConversion, adapt_to_model, load_dataset, parse_normalize
from uncert_cli.data.adapt import check_labels
from uncert_cli.storage.factor_file import is_hdf5_file
from uncert_cli.storage.opening import open_factor_model
from uncert_cli.workflows.forward_check import check_model_runs


def load_checkpoint_model(
    checkpoint: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: list[str] | None = None,
    trust_pickle: bool = False,
    task: str | None = None,
    state_key: str | None = None,
    strip_prefix: str | None = None,
    model_output: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """:func:`load_model` with its options as the command line gives them (``arch_kwargs`` items, ``model_output`` text)."""
    kwargs: dict[str, Any] | None = parse_arch_kwargs(arch_kwargs) if arch_kwargs else None
    return load_model(checkpoint, arch=arch, arch_kwargs=kwargs, trust_pickle=trust_pickle, task=task,
                      state_key=state_key, strip_prefix=strip_prefix, output=parse_output_choice(model_output),
                      trust_remote_code=trust_remote_code)


def load_model_file(
    path: str | Path, *, arch: str | None = None, arch_kwargs: list[str] | None = None, **checkpoint_options: Any
) -> LoadedModel:
    """The network ``path`` holds, as ``uncert info`` describes it: a factor file's at its stored weights (its
    class imported only when ``arch`` names it; :func:`~uncert_cli.storage.opening.open_factor_model`), or a
    checkpoint's (:func:`load_checkpoint_model`, which also takes ``checkpoint_options``: ``trust_pickle``,
    ``state_key``, ``strip_prefix``, ``trust_remote_code``, ...).

    Returns:
        The module and its metadata.
    """
    if is_hdf5_file(path):
        return open_factor_model(path, arch=arch, arch_kwargs=arch_kwargs)
    return load_checkpoint_model(path, arch=arch, arch_kwargs=arch_kwargs, **checkpoint_options)


def load_model_data(
    meta: ModelMeta,
    spec: str | None,
    *,
    split: str = "train",
    limit: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    normalize: str | None = None,
    conversion: ImageConversion | None = None,
    model: nn.Module | None = None,
    split_required_by: str | None = None,
    offers: tuple[str, ...] = ("channels", "resize"),
) -> ArrayDataset:
    """Load ``spec`` (default: the dataset the checkpoint says it was trained on), shaped for the model.

    The images are converted (:func:`recorded_conversion`: the one ``meta`` records, each field
    replaced by ``conversion``'s where set), then normalised and reshaped (:func:`adapt_to_model`).
    When the checkpoint records no input shape and ``model`` is given, the shape is the first of the
    dataset's readings that the model runs on (:func:`infer_input_shape`); ``fit`` records it.
    Packed token data (several arrays per example) is fed to ``model`` as keyword arguments from here on
    (:func:`~uncert_cli.checkpoint.keyword_inputs.feed_keyword_inputs`).
    With ``model`` the model's forward is then tried on the first examples
    (:func:`~uncert_cli.workflows.forward_check.check_model_runs`, suggesting the fixes named in ``offers``),
    its output width checked against ``meta.num_outputs``, and only then the labels against that width.
    A file without splits is used whole unless ``split_required_by`` says who asked for the split
    (e.g. ``"split test was given"``); it is then an error.

    Returns:
        The examples, converted, normalised and reshaped to the model's input shape.

    Raises:
        UserError: the spec, split or data does not suit the model (each with its own message).
    """
    spec = spec or meta.dataset
    if not spec:
        raise UserError("no dataset given and the checkpoint does not name one; pass {param} SPEC (e.g. {param} mnist)",
                        param="spec")
    norm = parse_normalize(normalize) if normalize else _checkpoint_normalization(meta)
    with data_within_memory(spec, resizable="resize" in offers):
        raw = load_dataset(spec, split=split, root=root, limit=limit, download=download,
                           split_required_by=split_required_by, tokenizer=tokenizer_folder(meta))
        raw = convert_as_recorded(meta, conversion, raw)
        shape = meta.input_shape
        if model is not None:
            feed_keyword_inputs(model, raw.input_names, raw.name)
        if shape is None and model is not None:
            shape = infer_input_shape(model, raw)
        # With the model at hand its output width is checked against the metadata before the labels are checked
        # against that width: a wrong record is then named as such, not blamed on the data.
        data = adapt_to_model(raw, shape, normalize=norm, num_outputs=None if model is not None else meta.num_outputs,
                              task=meta.task, convertible=True)
    if model is not None:
        check_model_runs(model, data, offers=offers, num_outputs=meta.num_outputs)
        check_labels(data, meta.num_outputs)
    return data


@contextlib.contextmanager
def data_within_memory(spec: str, *, resizable: bool) -> Iterator[None]:
    """Turn running out of memory while the block reads, converts or normalises ``spec`` into a UserError
    naming what holds the memory there (the examples) and how to hold fewer: ``limit``, and smaller
    images with ``resize`` where the caller can convert them (``resizable``).

    Raises:
        UserError: an allocation failed inside the block (host ``MemoryError``, torch's CPU allocator, CUDA).
        MemoryError: never; an allocation failure leaves as the UserError.
        RuntimeError: another failure inside the block, re-raised as is.
    """
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not (isinstance(exc, MemoryError) or out_of_memory(exc)):
            raise
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        images = ", or, for images, convert them to a smaller size with {resize} H,W" if resizable else ""
        raise UserError(
            f"out of memory reading or converting the data '{spec}' ({reason}); read fewer examples with "
            f"{{limit}}{images}",
            mentions=("limit", "resize") if resizable else ("limit",),
        ) from None


def recorded_conversion(meta: ModelMeta, given: ImageConversion | None = None) -> ImageConversion:
    """The image conversion ``meta`` records (as the fit converted its images), overridden field by field by ``given``."""
    stored = ImageConversion(channels=meta.convert_channels, size=meta.convert_size)  # type: ignore[arg-type]
    return stored if given is None else stored.overridden_by(given)


def convert_as_recorded(meta: ModelMeta, given: ImageConversion | None, raw: ArrayDataset) -> ArrayDataset:
    """``raw`` converted by :func:`recorded_conversion`; a refusal caused by the record says so (no flag to drop).

    Data that is not images but already holds the model's input size per example is left alone: the
    record says how the fit's *images* reached the model.

    Returns:
        The converted examples.

    Raises:
        UserError: the conversion failed; a refusal caused by the record says so.
    """
    conversion = recorded_conversion(meta, given)
    recorded = recorded_conversion(meta)
    from_record = not recorded.is_identity and (given is None or recorded.overridden_by(given) != given)
    if from_record and raw.inputs.ndim != 4:
        if meta.input_shape is not None and math.prod(raw.sample_shape) == math.prod(meta.input_shape):
            return raw  # already the model's input, flat: the record is about images
        raise UserError(
            f"dataset '{raw.name}' has examples of shape {tuple(raw.sample_shape)}, not images (C, H, W), but the fit "
            f"converted its images to {recorded.describe()} and recorded it, so every command converts its data "
            "alike; use image data of the kind the model was fitted on"
        )
    return conversion.apply(raw)


def with_conversion(meta: ModelMeta, conversion: ImageConversion) -> ModelMeta:
    """``meta`` recording ``conversion`` (what ``fit`` applied), so later commands convert their data alike."""
    size = tuple(conversion.size) if conversion.size is not None else None
    return dataclasses.replace(meta, convert_channels=conversion.channels, convert_size=size)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"64,16"`` → ``(64, 16)``: one example's shape without the batch dimension (``input_shape`` as text)."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or len(shape) > 8 or any(d < 1 or d > 2**31 for d in shape):
        raise UserError(
            f"{{param}} takes one example's shape as positive integers, got '{text}'; e.g. {{param}} 64,16",
            param="input_shape",
        )
    return shape


def _shape_readings(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Ways to read one stored example: as loaded (``(N, H, W)`` arrays get a channel axis, so
    ``(1, H, W)``), without that axis (a ``(T, F)`` sequence), and flat.

    Returns:
        The candidate shapes, most likely first.
    """
    readings = [shape]
    if len(shape) >= 3 and shape[0] == 1:
        readings.append(shape[1:])
    flat = (math.prod(shape),)
    if flat not in readings:
        readings.append(flat)
    return readings


def infer_input_shape(model: nn.Module, ds: ArrayDataset) -> tuple[int, ...]:
    """The per-example input shape ``model`` runs on, for a checkpoint that records none.

    Tries the readings of :func:`_shape_readings` on two examples, in order, and returns the first
    the model accepts; if it accepts none, the dataset's own shape (the first batch then reports
    the model's error in full).

    Returns:
        The shape, without the batch dimension.
    """
    from uncert_cli.core.model_state import eval_mode
    from uncert_cli.data import iter_batches

    x, _ = next(iter_batches(ds.take(2), 2))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = x if x.dtype == torch.int64 else x.to(dtype)
    for shape in _shape_readings(ds.sample_shape):
        try:
            with torch.no_grad(), eval_mode(model):
                model(x.reshape(x.shape[0], *shape))
        except Exception:  # noqa: BLE001 - any failure of the model's own code means "not this reading"
            continue
        return shape
    return ds.sample_shape


def _checkpoint_normalization(meta: ModelMeta):
    if meta.normalize_mean is None or meta.normalize_std is None:
        return None
    return list(meta.normalize_mean), list(meta.normalize_std)


def with_normalization(meta: ModelMeta, normalize: str | None) -> ModelMeta:
    """``meta`` with the fit's ``normalize`` recorded (unchanged when ``None``).

    The factor file stores the model's metadata; every later command (``ood``, ``attack``, ``tune``,
    ``prune --evaluate``) normalises its data from it, so the normalisation the curvature was fitted
    with must be recorded there, or those commands would score differently normalised inputs.

    Returns:
        The metadata to record.
    """
    if not normalize:
        return meta
    means, stds = parse_normalize(normalize)
    return dataclasses.replace(meta, normalize_mean=tuple(means), normalize_std=tuple(stds))
