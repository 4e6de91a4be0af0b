"""Load what a command works on: the model from a checkpoint, the data adapted to that model.

Every subcommand that touches a checkpoint or a dataset goes through these two functions, so all of
them understand the same options and fail with the same messages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from uncert_cli.checkpoint import LoadedModel, ModelMeta, load_model, parse_arch_kwargs
from uncert_cli.data import ArrayDataset, adapt_to_model, load_dataset, parse_normalize
from uncert_cli.errors import UserError


def load_checkpoint_model(
    checkpoint: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: list[str] | None = None,
    trust_pickle: bool = False,
    task: str | None = None,
) -> LoadedModel:
    kwargs: dict[str, Any] | None = parse_arch_kwargs(arch_kwargs) if arch_kwargs else None
    return load_model(checkpoint, arch=arch, arch_kwargs=kwargs, trust_pickle=trust_pickle, task=task)


def load_model_data(
    meta: ModelMeta,
    spec: str | None,
    *,
    split: str = "train",
    limit: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    normalize: str | None = None,
    role: str = "--data",
) -> ArrayDataset:
    """Load ``spec`` (default: the dataset the checkpoint says it was trained on), shaped for the model."""
    spec = spec or meta.dataset
    if not spec:
        raise UserError(f"no dataset given and the checkpoint does not name one; pass {role} SPEC (e.g. {role} mnist)")
    raw = load_dataset(spec, split=split, root=root, limit=limit, download=download)
    norm = parse_normalize(normalize) if normalize else _checkpoint_normalization(meta)
    return adapt_to_model(raw, meta.input_shape, normalize=norm, num_outputs=meta.num_outputs, task=meta.task)


def _checkpoint_normalization(meta: ModelMeta):
    if meta.normalize_mean is None or meta.normalize_std is None:
        return None
    return list(meta.normalize_mean), list(meta.normalize_std)


def with_normalization(meta: ModelMeta, normalize: str | None) -> ModelMeta:
    """``meta`` with the ``--normalize`` given to ``fit`` recorded (unchanged when ``None``).

    The factor file stores the model's metadata; every later command (``ood``, ``attack``, ``tune``,
    ``prune --evaluate``) normalises its data from it, so the normalisation the curvature was fitted
    with must be recorded there, or those commands would score differently normalised inputs.
    """
    if not normalize:
        return meta
    means, stds = parse_normalize(normalize)
    return dataclasses.replace(meta, normalize_mean=tuple(means), normalize_std=tuple(stds))
