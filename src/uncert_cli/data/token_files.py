"""Tokenised text in ``.npz`` / HDF5 files: ``input_ids`` with ``attention_mask`` / ``token_type_ids``.

A file is token data when it holds an ``input_ids`` array (or ``input_ids_train`` / ``train/input_ids``
for splits side by side, as :mod:`.file_splits` lays out ``x``/``y``). Each of the optional arrays
``attention_mask`` and ``token_type_ids`` must then be ``(N, T)`` like ``input_ids``; the labels are
``labels``, ``label`` or ``y`` (all with the same split suffix). Several arrays per example are packed
into one ``(N, k, T)`` int64 tensor whose rows :attr:`ArrayDataset.input_names` names, in the order of
:data:`TOKEN_FIELDS`, and fed to the model as keyword arguments; ``input_ids`` alone stays the plain
``(N, T)`` token array, given to the model as its first argument (as an ``x`` array of ids is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uncert_cli.core.errors import UserError
from uncert_cli.data.arrays import as_tensor, standardize_targets
from uncert_cli.data.dataset import ArrayDataset

TOKEN_FIELDS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
LABEL_FIELDS: tuple[str, ...] = ("labels", "label", "y")
_SPLITS: tuple[str, ...] = ("train", "val", "test")

# (array name, rows to read or None for all) -> the array
ArrayReader = Callable[[str, "int | None"], np.ndarray]


def _named(field: str, split: str | None) -> tuple[str, ...]:
    """The names ``field`` may have in a file, for ``split`` (``None``: a file without splits)."""
    return (field,) if split is None else (f"{field}_{split}", f"{split}/{field}")


def _find(available: set[str], field: str, split: str | None) -> str | None:
    return next((name for name in _named(field, split) if name in available), None)


def token_splits(available: Sequence[str]) -> list[str | None] | None:
    """The splits a file holds token data for (``[None]`` for one unsplit set); ``None``: not token data."""
    names = set(available)
    found = [split for split in _SPLITS if _find(names, "input_ids", split)]
    if found:
        return list(found)
    return [None] if "input_ids" in names else None


def _pick_split(spec_path: Path, splits: list[str | None], split: str, required_by: str | None) -> str | None:
    if splits != [None]:
        if split not in splits:
            held = [str(s) for s in splits]
            raise UserError(f"{spec_path} holds token data for the splits {', '.join(held)} but no {split!r}; pass "
                            f"{{param}} {' or {param} '.join(held)}", param="split")
        return split
    if required_by is not None:
        raise UserError(f"{required_by}, but {spec_path} holds one set of token data (no input_ids_{split} or "
                        f"{split}/input_ids); give a file that holds the {split} examples, or drop {{param}}", param="split")
    return None


def load_token_arrays(
    name: str,
    spec_path: Path,
    available: Sequence[str],
    read: ArrayReader,
    *,
    split: str,
    required_by: str | None,
    limit: int | None,
    labels_optional: bool,
) -> ArrayDataset:
    """The token data of one split (see the module docstring), read through ``read``."""
    splits = token_splits(available)
    assert splits is not None, "caller checks token_splits first"
    used = _pick_split(spec_path, splits, split, required_by)
    names = set(available)
    fields = [(field, key) for field in TOKEN_FIELDS if (key := _find(names, field, used)) is not None]
    arrays = []
    for field, key in fields:
        tensor = as_tensor(read(key, limit), field, f"{spec_path}:{key}")
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex() or tensor.ndim != 2:
            raise UserError(f"{field} in {spec_path} ({key}) has dtype {tensor.dtype} and shape {tuple(tensor.shape)}; "
                            "store token arrays as integers of shape (N, T)")
        arrays.append((field, key, tensor.to(torch.int64)))
    first_field, first_key, ids = arrays[0]
    for field, key, tensor in arrays[1:]:
        if tensor.shape != ids.shape:
            raise UserError(f"{key} in {spec_path} has shape {tuple(tensor.shape)} but {first_key} has "
                            f"{tuple(ids.shape)}; store one {field} row per input_ids row, of the same length")
    if ids.numel() and int(ids.min()) < 0:
        raise UserError(f"input_ids in {spec_path} include {int(ids.min())}; token ids must be 0, 1, 2, ...")
    mask = next((t for f, _, t in arrays if f == "attention_mask"), None)
    if mask is not None and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise UserError(f"attention_mask in {spec_path} holds values other than 0 and 1; store 1 for tokens and 0 "
                        "for padding")
    label_key = next((key for field in LABEL_FIELDS if (key := _find(names, field, used)) is not None), None)
    if label_key is None:
        if not labels_optional:
            wanted = " or ".join(_named(LABEL_FIELDS[0], used))
            raise UserError(f"{spec_path} holds token arrays but no labels; store them as {wanted} "
                            f"(or {', '.join(LABEL_FIELDS[1:])})")
        labels = torch.zeros(ids.shape[0], dtype=torch.int64)
    else:
        labels = standardize_targets(as_tensor(read(label_key, limit), "labels", str(spec_path)), str(spec_path))
    if labels.shape[0] != ids.shape[0]:
        raise UserError(f"{spec_path} has {ids.shape[0]} token rows but {labels.shape[0]} labels; store one label per row")
    packed = len(arrays) > 1
    inputs = torch.stack([t for _, _, t in arrays], dim=1).contiguous() if packed else ids.contiguous()
    input_names = tuple(f for f, _, _ in arrays) if packed else None
    if labels.dtype != torch.int64:
        return ArrayDataset(name, inputs, labels, "regression", split=used, input_names=input_names)
    classes = int(labels.max()) + 1 if labels.numel() else 0
    return ArrayDataset(name, inputs, labels, "classification", classes, split=used, input_names=input_names)
