"""Turning raw arrays (from any file format) into an :class:`ArrayDataset`, with one set of rules.

Rules (the same for npz, HDF5, .pt and the built-ins):

* Inputs: uint8 stays uint8 (it means pixel/255, see :mod:`.dataset`); uint16 images (three or four
  dimensions: ``(N, H, W)``, ``(N, C, H, W)``, ``(N, H, W, C)``) become float32 ``pixel / 65535``, as
  uint8 is scaled by its dtype's maximum (torchvision's ``ToDtype(scale=True)`` rule); other integer
  arrays (uint16 ``(N, T)`` included: vocabularies under 65536 are stored so) are token ids and become
  int64, kept as stored (no channel axis, no scaling); everything else becomes float32 unscaled.
  ``(N,)`` -> ``(N, 1)``; ``(N, H, W)`` -> ``(N, 1, H, W)``; channel-last ``(N, H, W, C)``
  with C in {1, 3, 4} (and dim 1 not itself a channel count) -> ``(N, C, H, W)``.
* Targets: integer or bool -> classification, ``(N,)`` int64 (``(N, 1)`` is squeezed); float ->
  regression, ``(N, D)`` float32 (``(N,)`` becomes ``(N, 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from uncert_cli.core.errors import UserError
from uncert_cli.data.dataset import ArrayDataset

_CHANNEL_COUNTS = (1, 3, 4)


def as_tensor(array: Any, what: str, source: str) -> torch.Tensor:
    """A CPU tensor from a numpy array, tensor or nested list; UserError for anything else (e.g. strings)."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu()
    try:
        as_numpy = np.asarray(array)
    except (TypeError, ValueError) as err:
        raise UserError(f"{what} in {source} is not a numeric array ({err}); store a numeric array") from err
    if as_numpy.dtype.kind not in "biuf":
        raise UserError(f"{what} in {source} has dtype {as_numpy.dtype}, not numbers; store a numeric array")
    if not as_numpy.flags.writeable or not as_numpy.flags.c_contiguous:
        # torch.from_numpy warns on read-only buffers (np.frombuffer, h5py); one copy makes it ours.
        as_numpy = np.ascontiguousarray(as_numpy).copy()
    return torch.from_numpy(as_numpy)


def standardize_inputs(inputs: torch.Tensor, source: str) -> torch.Tensor:
    """Inputs in the stored convention: uint8 or float32, ``(N, *sample_shape)``, images channel-first."""
    if inputs.ndim == 0:
        raise UserError(f"inputs in {source} are a single number, not (N, ...) examples; store one row per example")
    if inputs.is_complex():
        raise UserError(f"inputs in {source} are complex numbers; store real-valued inputs")
    if inputs.dtype == torch.uint16 and inputs.ndim in (3, 4):
        # 16-bit images: token ids come as (N, T), so a 3- or 4-dimensional array is pixels
        inputs = inputs.to(torch.float32).div_(float(torch.iinfo(torch.uint16).max))
    if inputs.dtype not in (torch.uint8, torch.bool) and not inputs.is_floating_point():
        # Integer arrays other than uint8 pixels are token ids: (N, T) as stored, never scaled.
        inputs = inputs.to(torch.int64)
        if inputs.numel() and int(inputs.min()) < 0:
            raise UserError(f"integer inputs in {source} include {int(inputs.min())}; token ids must be 0, 1, 2, ...")
        return (inputs.unsqueeze(1) if inputs.ndim == 1 else inputs).contiguous()
    if inputs.dtype != torch.uint8:
        inputs = inputs.to(torch.float32)
    if inputs.ndim == 1:
        inputs = inputs.unsqueeze(1)  # N scalar features
    elif inputs.ndim == 3:
        inputs = inputs.unsqueeze(1)  # (N, H, W) grayscale images
    elif inputs.ndim == 4 and inputs.shape[-1] in _CHANNEL_COUNTS and inputs.shape[1] not in _CHANNEL_COUNTS:
        inputs = inputs.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    return inputs.contiguous()


def standardize_targets(targets: torch.Tensor, source: str) -> torch.Tensor:
    """Targets in the stored convention: ``(N,)`` int64 class indices or ``(N, D)`` float32 values."""
    if targets.ndim == 0:
        raise UserError(f"labels in {source} are a single number, not one per example; store an (N,) array")
    if targets.dtype == torch.bool or not (targets.is_floating_point() or targets.is_complex()):
        if targets.ndim == 2 and targets.shape[1] == 1:
            targets = targets[:, 0]
        if targets.ndim != 1:
            raise UserError(
                f"integer labels in {source} have shape {tuple(targets.shape)}; store class indices as an (N,) array "
                "(not one-hot), or float values for regression"
            )
        targets = targets.to(torch.int64)
        if targets.numel() and int(targets.min()) < 0:
            raise UserError(f"labels in {source} include {int(targets.min())}; class labels must be 0, 1, 2, ...")
        return targets.contiguous()
    if targets.is_complex():
        raise UserError(f"targets in {source} are complex numbers; store real-valued targets")
    if targets.ndim == 1:
        targets = targets.unsqueeze(1)
    if targets.ndim != 2:
        raise UserError(f"regression targets in {source} have shape {tuple(targets.shape)}; store them as (N,) or (N, D)")
    return targets.to(torch.float32).contiguous()


def dataset_from_arrays(
    name: str,
    inputs: Any,
    targets: Any,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> ArrayDataset:
    """Build an :class:`ArrayDataset` from raw arrays following the module rules.

    ``inputs``: ``(N, ...)`` array; ``targets``: ``(N,)`` or ``(N, D)``. For classification the class
    count is ``len(class_names)``, else ``num_classes``, else ``max label + 1``.
    """
    input_tensor = standardize_inputs(as_tensor(inputs, "inputs", name), name)
    target_tensor = standardize_targets(as_tensor(targets, "labels", name), name)
    if input_tensor.shape[0] != target_tensor.shape[0]:
        raise UserError(
            f"{name} has {input_tensor.shape[0]} inputs but {target_tensor.shape[0]} labels; store one label per example"
        )
    if target_tensor.dtype != torch.int64:
        return ArrayDataset(name, input_tensor, target_tensor, "regression")
    names = list(class_names) if class_names is not None else None
    if names is not None:
        num_classes = len(names)
    elif num_classes is None:
        num_classes = int(target_tensor.max()) + 1 if target_tensor.numel() else 0
    if target_tensor.numel() and int(target_tensor.max()) >= num_classes:
        raise UserError(f"{name} has label {int(target_tensor.max())} but only {num_classes} classes; check the labels")
    return ArrayDataset(name, input_tensor, target_tensor, "classification", num_classes, names)
