"""Splits inside user files: which examples ``--split`` means for ``.npz``, HDF5 and image folders.

A file spec has splits when it holds them side by side:

* ``.npz`` / HDF5: arrays ``x_train, y_train, x_test, y_test`` (any default pair or the names given
  after ``:``, with ``_train``/``_val``/``_test`` appended; Keras' ``mnist.npz`` is laid out so);
  HDF5 may instead group them, ``train/images`` and ``train/labels``;
* a folder: ``train/``, ``val/``, ``test/`` subfolders, each with one subfolder per class.

A file without splits is one set of examples. A command's implicit split (``fit`` reads train,
``ood`` test) then means the whole file; a split the user asked for is an error, never ignored:
``ood`` on a training file would otherwise call its training examples "test" data.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.data.declared import HDF5_READ_ERRORS, NPZ_READ_ERRORS
from uncert_cli.data.files import DEFAULT_KEY_PAIRS, HDF5_SUFFIXES, NPZ_SUFFIXES, FileSpec

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def array_names(spec: FileSpec) -> list[str] | None:
    """Array names in an npz/HDF5 file (``None`` for other kinds or unreadable files: the loader
    then reports the problem in its own words).
    """
    suffix = spec.path.suffix.lower()
    try:
        if suffix in NPZ_SUFFIXES:
            with np.load(spec.path, allow_pickle=False) as archive:
                return list(archive.files)
        if suffix in HDF5_SUFFIXES:
            import h5py

            names: list[str] = []
            with h5py.File(spec.path, "r") as h5:
                h5.visititems(lambda path, item: names.append(path) if isinstance(item, h5py.Dataset) else None)
            return names
    except NPZ_READ_ERRORS + HDF5_READ_ERRORS:
        return None
    return None


def _array_splits(spec: FileSpec, names: list[str]) -> dict[str, FileSpec]:
    pairs = [spec.keys] if spec.keys is not None else list(DEFAULT_KEY_PAIRS)
    available = set(names)
    for inputs, labels in pairs:
        found: dict[str, FileSpec] = {}
        for split in SPLIT_NAMES:
            for pair in ((f"{inputs}_{split}", f"{labels}_{split}"), (f"{split}/{inputs}", f"{split}/{labels}")):
                if set(pair) <= available:
                    found[split] = replace(spec, keys=pair)
                    break
        if found:
            return found
    return {}


def _folder_splits(spec: FileSpec) -> dict[str, FileSpec]:
    found = {}
    for split in SPLIT_NAMES:
        sub = spec.path / split
        if sub.is_dir() and any(p.is_dir() for p in sub.iterdir()):
            found[split] = replace(spec, path=sub)
    return found


def file_splits(spec: FileSpec) -> dict[str, FileSpec]:
    """``{split: spec of its examples}`` for the splits the file holds; empty when it has none."""
    if spec.path.is_dir():
        return _folder_splits(spec)
    names = array_names(spec)
    return _array_splits(spec, names) if names is not None else {}


def split_was_given(split: str) -> str:
    """The ``split_required_by`` of a caller that asked for ``split`` itself: ``"{param} test was given"``,
    which the refusal (raised with ``param="split"``) shows as ``split test was given`` to a Python caller
    and as ``--split test was given`` on the command line.
    """
    return f"{{param}} {split} was given"


def resolve_file_split(spec: FileSpec, split: str, required_by: str | None) -> tuple[FileSpec, str | None]:
    """``(spec of the examples to load, split they are or None for the whole file)``.

    ``required_by`` says who asked for ``split`` (:func:`split_was_given`, or why a command needs it); ``None``
    when the split is only the command's default, which a file without splits satisfies with all of its examples.
    """
    splits = file_splits(spec)
    if splits:
        if split not in splits:
            raise UserError(
                f"{spec.path} holds the splits {', '.join(splits)} but no {split!r}; pass "
                + " or ".join("{param} " + name for name in splits),
                param="split",
            )
        return splits[split], split
    if required_by is not None:
        raise UserError(
            f"{required_by}, but {spec.path} holds one set of examples (no x_{split}/y_{split} arrays, no "
            f"{split}/ subfolder); give a file that holds the {split} examples (or its splits side by side), "
            "or drop {param} to use the whole file",
            param="split",
        )
    return spec, None


def is_split_folder(path: Path) -> bool:
    """True for a folder laid out as ``train/``, ``test/``, ... rather than one folder per class."""
    return path.is_dir() and bool(_folder_splits(FileSpec(path)))
