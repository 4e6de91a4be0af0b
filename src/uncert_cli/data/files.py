"""User files as datasets: ``.npz``, HDF5, ``.pt`` tensors and image folders.

Spec syntax: ``PATH`` or ``PATH:INPUTS,LABELS`` where INPUTS/LABELS name the arrays (npz keys, HDF5
dataset paths such as ``group/images``, or keys of a ``.pt`` dict). Without names, the first pair
present of ``x,y`` / ``images,labels`` / ``inputs,targets`` is used. A ``.pt`` file holds a dict
``{"x": tensor, "y": tensor}`` or a tuple ``(x, y)`` and is read with ``torch.load(weights_only=True)``
only. A folder is an image folder with one subfolder per class (see :mod:`.image_folder`).
A file may hold splits side by side (``x_train``/``x_test`` arrays, ``train/``/``test/`` folders; see
:mod:`.file_splits`); otherwise it is one set of examples and asking for a split is an error.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uncert_cli.core.errors import UserError
from uncert_cli.core.hdf5_contained import outside_reference
from uncert_cli.core.input_files import check_input_file
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.declared import HDF5_READ_ERRORS, NPZ_READ_ERRORS, check_declared_size, check_npz_member
from uncert_cli.data.hf_datasets import is_hf_dataset, load_hf_dataset
from uncert_cli.data.image_folder import load_image_folder
from uncert_cli.data.token_files import load_token_arrays, token_splits

NPZ_SUFFIXES = (".npz",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TORCH_SUFFIXES = (".pt", ".pth")
FILE_SUFFIXES = NPZ_SUFFIXES + HDF5_SUFFIXES + TORCH_SUFFIXES
DEFAULT_KEY_PAIRS: tuple[tuple[str, str], ...] = (("x", "y"), ("images", "labels"), ("inputs", "targets"))
_SYNTAX_HINT = "use PATH or PATH:INPUTS,LABELS (e.g. data.h5:images,labels)"


@dataclass(frozen=True)
class FileSpec:
    """A parsed file spec: the path and, if given after ``:``, the names of the input and label arrays."""

    path: Path
    keys: tuple[str, str] | None = None
    # OOD sets need no labels: a file with only an input array (x, images, inputs, or a single array) is read
    # with every label 0, which no caller of this mode uses.
    labels_optional: bool = False


def parse_file_spec(spec: str) -> FileSpec:
    """Split ``"data.h5:images,labels"`` into path and array names; a path that exists as written wins."""
    if Path(spec).expanduser().exists() or ":" not in spec:
        return FileSpec(Path(spec).expanduser())
    head, _, tail = spec.rpartition(":")
    if Path(head).suffix.lower() not in FILE_SUFFIXES and not is_hf_dataset(Path(head).expanduser()):
        return FileSpec(Path(spec).expanduser())  # e.g. a Windows drive letter, not array names
    names = [name.strip() for name in tail.split(",")]
    if len(names) != 2 or not all(names):
        raise UserError(f"bad array names '{tail}' in '{spec}': give two comma-separated names; {_SYNTAX_HINT}")
    return FileSpec(Path(head).expanduser(), (names[0], names[1]))


def looks_like_file_spec(spec: str) -> bool:
    """True when ``spec`` is meant as a path (it exists, has a separator or a suffix) rather than a name."""
    named_folder = ":" in spec and is_hf_dataset(Path(spec.rpartition(":")[0]).expanduser())  # FOLDER:TEXT,LABEL
    return Path(spec).expanduser().exists() or "/" in spec or "\\" in spec or Path(spec).suffix != "" or named_folder


INPUT_ONLY_KEYS: tuple[str, ...] = ("x", "images", "inputs")


def _pick_keys(available: Sequence[str], spec: FileSpec) -> tuple[str, str | None]:
    """``(input array, label array)``; the label is ``None`` only for ``spec.labels_optional`` files
    holding inputs alone.
    """
    source, wanted = str(spec.path), spec.keys
    if wanted is not None:
        missing = [key for key in wanted if key not in available]
        if missing:
            has = ", ".join(available) or "nothing"
            raise UserError(f"{source} has no array named {missing[0]!r} (it has: {has}); fix the names after ':'")
        return wanted
    for pair in DEFAULT_KEY_PAIRS:
        if all(key in available for key in pair):
            return pair
    if spec.labels_optional:
        inputs = [key for key in INPUT_ONLY_KEYS if key in available]
        if inputs or len(available) == 1:
            return (inputs or list(available))[0], None
    expected = " or ".join(",".join(pair) for pair in DEFAULT_KEY_PAIRS)
    raise UserError(
        f"{source} has arrays {', '.join(available) or '(none)'} but not {expected}; name them as {source}:INPUTS,LABELS"
    )


def _no_labels(inputs: Any) -> np.ndarray:
    """Placeholder labels (all 0) for an unlabelled set, one per example."""
    return np.zeros(len(inputs), dtype=np.int64)


def load_npz(spec: FileSpec, name: str, limit: int | None) -> ArrayDataset:
    """``.npz`` with an input and a label array (no pickled objects)."""
    try:
        with np.load(spec.path, allow_pickle=False) as archive:
            input_key, label_key = _pick_keys(list(archive.files), spec)
            for key in (input_key, label_key):
                if key is not None:
                    check_npz_member(archive, key, limit, str(spec.path))
            inputs = archive[input_key][:limit]
            labels = archive[label_key][:limit] if label_key is not None else _no_labels(inputs)
    except UserError:
        raise
    except NPZ_READ_ERRORS as err:
        raise UserError(f"cannot read {spec.path} as npz ({err}); save it with numpy.savez(path, x=..., y=...)") from err
    return dataset_from_arrays(name, inputs, labels)


def check_contained(h5: Any, path: Path) -> None:
    """Refuse an HDF5 data file whose arrays live in other files (:mod:`uncert_cli.core.hdf5_contained`)."""
    reason = outside_reference(h5)
    if reason is not None:
        raise UserError(f"{path} reaches outside itself: {reason}; uncert reads only what the file you name holds. "
                        "Copy the arrays into the file (h5py: f['images'] = other['images'][()])")


def load_hdf5(spec: FileSpec, name: str, limit: int | None) -> ArrayDataset:
    """HDF5 file with two datasets (default ``images`` and ``labels``; nested paths allowed)."""
    import h5py  # lazy: only HDF5 specs need it

    try:
        with h5py.File(spec.path, "r") as h5:
            check_contained(h5, spec.path)
            available: list[str] = []
            h5.visititems(lambda path, item: available.append(path) if isinstance(item, h5py.Dataset) else None)
            wanted = spec.keys
            if wanted is None and all(key in available for key in ("images", "labels")):
                wanted = ("images", "labels")
            input_key, label_key = _pick_keys(available, dataclasses.replace(spec, keys=wanted))
            for key in (input_key, label_key):
                if key is not None:
                    check_declared_size(h5[key].shape, h5[key].dtype.itemsize, limit, f"{spec.path}:{key}")
            # Slicing the h5py dataset reads only the first `limit` rows from disk.
            inputs = h5[input_key][:limit] if limit is not None else h5[input_key][()]
            if label_key is None:
                labels = _no_labels(inputs)
            else:
                labels = h5[label_key][:limit] if limit is not None else h5[label_key][()]
    except UserError:
        raise
    except HDF5_READ_ERRORS as err:
        raise UserError(
            f"cannot read {spec.path} as HDF5 ({err}); check the file, or name the datasets as PATH:INPUTS,LABELS"
        ) from err
    return dataset_from_arrays(name, inputs, labels)


def _is_zip(path: Path) -> bool:
    """Torch's zip format (the default since 1.6) can be memory-mapped; the legacy format cannot."""
    import zipfile

    return zipfile.is_zipfile(path)


def load_torch_file(spec: FileSpec, name: str, limit: int | None) -> ArrayDataset:
    """``.pt``: ``{"x": ..., "y": ...}`` (or other key pair) or a tuple ``(x, y)``, loaded with weights_only=True."""
    try:
        # mmap: the tensors stay in the file until used, so sizes can be checked before allocating.
        content: Any = torch.load(spec.path, map_location="cpu", weights_only=True, mmap=_is_zip(spec.path))
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, AttributeError, ValueError) as err:
        raise UserError(
            f"cannot load {spec.path} with torch.load(weights_only=True) ({' '.join(str(err).split())[:200]}); "
            "save plain tensors: torch.save({'x': x, 'y': y}, path)"
        ) from err
    if isinstance(content, dict):
        input_key, label_key = _pick_keys([str(k) for k in content], spec)
        inputs = content[input_key]
        labels = content[label_key] if label_key is not None else torch.zeros(len(inputs), dtype=torch.int64)
    elif isinstance(content, (tuple, list)) and len(content) == 2 and spec.keys is None:
        inputs, labels = content
    else:
        raise UserError(
            f"{spec.path} holds a {type(content).__name__}, not a dict of arrays or an (x, y) pair; "
            "save it as torch.save({'x': x, 'y': y}, path)"
        )
    for what, array in (("inputs", inputs), ("labels", labels)):
        if isinstance(array, torch.Tensor) and array.dim() > 0:
            check_declared_size(tuple(array.shape), array.element_size(), limit, f"{spec.path} ({what})")
    if limit is not None:  # before any conversion copies the rows that --limit drops
        inputs = inputs[:limit] if isinstance(inputs, torch.Tensor) and inputs.dim() > 0 else inputs
        labels = labels[:limit] if isinstance(labels, torch.Tensor) and labels.dim() > 0 else labels
    return dataset_from_arrays(name, inputs, labels).take(limit)


def load_file_dataset(
    spec_text: str,
    *,
    limit: int | None = None,
    split: str = "train",
    split_required_by: str | None = None,
    labels_optional: bool = False,
    tokenizer: str | None = None,
) -> ArrayDataset:
    """Load a user file or folder spec (see the module docstring); the dataset is named by the spec text.

    ``tokenizer`` is the Hugging Face model folder whose tokenizer turns a saved dataset's text into tokens
    (:mod:`.hf_datasets`); ``None`` where the model came from elsewhere.

    ``split`` picks the examples of a file that holds splits (:mod:`.file_splits`); a file without
    splits is used whole unless ``split_required_by`` names who asked for the split (an error then).
    The dataset's ``split`` says which it was (``None``: the whole file). ``labels_optional`` reads a file
    that holds inputs alone (an OOD set) with placeholder labels.
    """
    from uncert_cli.data.file_splits import resolve_file_split  # imports this module's names

    spec = dataclasses.replace(parse_file_spec(spec_text), labels_optional=labels_optional)
    if not spec.path.exists():
        raise UserError(f"no such file or folder: {spec.path}; check the path (or give a built-in dataset name)")
    if not spec.path.is_dir():
        # The gate first: looking for split arrays opens the file (a FIFO would block right there).
        check_input_file(spec.path, "data file", whole=spec.path.suffix.lower() not in HDF5_SUFFIXES)
    if is_hf_dataset(spec.path):
        return load_hf_dataset(spec_text, spec.path, spec.keys, split=split, required_by=split_required_by, limit=limit,
                               labels_optional=labels_optional, tokenizer_folder=tokenizer)
    if spec.keys is None and not spec.path.is_dir():
        tokens = _load_token_file(spec, spec_text, limit, split, split_required_by)
        if tokens is not None:
            return tokens
    if spec.keys is None or not spec.path.is_dir():
        spec, used = resolve_file_split(spec, split, split_required_by)
        return dataclasses.replace(_load_file(spec, spec_text, limit), split=used)
    return _load_file(spec, spec_text, limit)


def _load_token_file(
    spec: FileSpec, spec_text: str, limit: int | None, split: str, required_by: str | None
) -> ArrayDataset | None:
    """Token data (``input_ids`` + ``attention_mask``/``token_type_ids``, :mod:`.token_files`) of an npz or
    HDF5 file; ``None`` when the file holds none (it is then read as ``x``/``y`` arrays).
    """
    from uncert_cli.data.file_splits import array_names

    suffix = spec.path.suffix.lower()
    if suffix not in NPZ_SUFFIXES + HDF5_SUFFIXES:
        return None
    available = array_names(spec)
    if available is None or token_splits(available) is None:
        return None
    where = str(spec.path)
    common: dict[str, Any] = dict(split=split, required_by=required_by, limit=limit, labels_optional=spec.labels_optional)
    try:
        if suffix in NPZ_SUFFIXES:
            with np.load(spec.path, allow_pickle=False) as archive:
                def read_npz(key: str, rows: int | None) -> np.ndarray:
                    check_npz_member(archive, key, rows, where)
                    return archive[key][:rows]

                return load_token_arrays(spec_text, spec.path, available, read_npz, **common)
        import h5py

        with h5py.File(spec.path, "r") as h5:
            check_contained(h5, spec.path)

            def read_h5(key: str, rows: int | None) -> np.ndarray:
                check_declared_size(h5[key].shape, h5[key].dtype.itemsize, rows, f"{where}:{key}")
                return h5[key][:rows] if rows is not None else h5[key][()]

            return load_token_arrays(spec_text, spec.path, available, read_h5, **common)
    except UserError:
        raise
    except NPZ_READ_ERRORS + HDF5_READ_ERRORS as err:
        raise UserError(f"cannot read the token arrays of {spec.path} ({err}); check the file") from err


def _load_file(spec: FileSpec, spec_text: str, limit: int | None) -> ArrayDataset:
    if spec.path.is_dir():
        if spec.keys is not None:
            raise UserError(f"'{spec_text}': array names after ':' only apply to .npz/.h5/.pt files, not folders")
        return load_image_folder(spec.path, spec_text, limit=limit)
    suffix = spec.path.suffix.lower()
    # HDF5 files are read row by row (--limit reads only those rows), so only they may exceed memory.
    check_input_file(spec.path, "data file", whole=suffix not in HDF5_SUFFIXES)
    if suffix in NPZ_SUFFIXES:
        return load_npz(spec, spec_text, limit)
    if suffix in HDF5_SUFFIXES:
        return load_hdf5(spec, spec_text, limit)
    if suffix in TORCH_SUFFIXES:
        return load_torch_file(spec, spec_text, limit)
    raise UserError(
        f"unsupported data file type '{suffix or spec.path.name}'; use .npz, .h5/.hdf5, .pt or a folder of class subfolders"
    )
