"""Hugging Face datasets saved with ``save_to_disk``: a text column tokenised with the model folder's tokenizer.

A folder holding ``dataset_info.json`` + ``state.json`` (one ``Dataset``) or ``dataset_dict.json`` with one
subfolder per split (a ``DatasetDict``: ``train``, ``validation`` or ``val``, ``test``) is read with
``datasets.load_from_disk`` (arrow files and JSON only: no loading script, nothing fetched). The columns are
``PATH:TEXT,LABEL`` when named, else the first of :data:`TEXT_COLUMNS` and of :data:`LABEL_COLUMNS`. A
dataset already holding ``input_ids`` needs no tokenizer; otherwise the text is tokenised by the tokenizer
saved in the Hugging Face model folder (``tokenizer.save_pretrained``), recorded by ``fit`` so that every
later command tokenises alike: padded to the longest text of the set, truncated at the model's maximum. The
result is packed token data (:mod:`.token_files`), fed to the network as keyword arguments.

``datasets`` and ``transformers`` are optional (``pip install 'uncert-cli[hf]'``); without them such a
folder is a one-line error saying so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.core.hf_offline import import_offline
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.token_files import LABEL_FIELDS, TOKEN_FIELDS, load_token_arrays

TEXT_COLUMNS: tuple[str, ...] = ("text", "sentence", "content", "review", "document")
LABEL_COLUMNS: tuple[str, ...] = ("label",) + LABEL_FIELDS
_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}
MISSING = ("the datasets package is not installed; install it with pip install 'uncert-cli[hf]' (or pip install "
           "datasets) to read Hugging Face datasets saved with save_to_disk")


def is_hf_dataset(path: Path) -> bool:
    """True for a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or
                              ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))


def _load_from_disk(path: Path) -> Any:
    datasets = import_offline("datasets", MISSING)
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged folder: whatever the arrow reader raises
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot read {path} as a saved Hugging Face dataset ({type(exc).__name__}: {said})") from None


def _split_of(loaded: Any, path: Path, split: str, required_by: str | None) -> tuple[Any, str | None]:
    if not hasattr(loaded, "column_names") or isinstance(loaded.column_names, dict):  # a DatasetDict
        held = list(loaded.keys())
        name = next((n for n in _SPLIT_NAMES[split] if n in held), None)
        if name is None:
            raise UserError(f"{path} holds the splits {', '.join(held)} but no {split!r} ({' or '.join(_SPLIT_NAMES[split])}); "
                            "pass {param} with one it holds", param="split")
        return loaded[name], split
    if required_by is not None:
        raise UserError(f"{required_by}, but {path} is one saved Dataset without splits; save a DatasetDict with a "
                        f"{split!r} split, or drop {{param}}", param="split")
    return loaded, None


def _tokenizer(folder: str | None, spec: str, column: str) -> Any:
    if folder is None:
        raise UserError(f"'{spec}' holds text (column {column!r}), which uncert tokenises with the tokenizer saved in the "
                        "Hugging Face model folder (tokenizer.save_pretrained(folder), before fit), and this model has "
                        "none; save it there and fit again, or store input_ids and attention_mask columns instead")
    if not Path(folder).is_dir():
        raise UserError(f"'{spec}' holds text, to be tokenised with the tokenizer of the model folder {folder}, "
                        "which no longer exists; restore the folder or store input_ids and attention_mask instead")
    transformers = import_offline("transformers", "transformers is not installed; install it with pip install "
                                  f"'uncert-cli[hf]' to tokenise the text of '{spec}'")
    try:  # trust_remote_code=False: a tokenizer naming its own code is refused by transformers
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - no tokenizer files, custom code, a damaged vocabulary
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"the model folder {folder} has no usable tokenizer for the text of '{spec}' "
                        f"({type(exc).__name__}: {said}); save one there with tokenizer.save_pretrained(folder)") from None


def load_hf_dataset(
    spec: str,
    path: Path,
    columns: tuple[str, str] | None,
    *,
    split: str,
    required_by: str | None,
    limit: int | None,
    labels_optional: bool,
    tokenizer_folder: str | None,
) -> ArrayDataset:
    """The examples of ``split`` (see the module docstring) as token data."""
    part, used = _split_of(_load_from_disk(path), path, split, required_by)
    if limit is not None and limit < len(part):
        part = part.select(range(limit))
    names = list(part.column_names)
    label = columns[1] if columns else next((c for c in LABEL_COLUMNS if c in names), None)
    if labels_optional and label not in names:  # an OOD set: its labels are never read
        label = None
    arrays: dict[str, np.ndarray] = {}
    if columns is None and "input_ids" in names:
        arrays = {f: np.asarray(part[f]) for f in TOKEN_FIELDS if f in names}
    else:
        text = columns[0] if columns else next((c for c in TEXT_COLUMNS if c in names), None)
        if columns and text not in names:
            raise UserError(f"{path} has no column {text!r} (it has: {', '.join(names)}); fix the names after ':'")
        if text is None:
            raise UserError(f"{path} has the columns {', '.join(names)} but no text column ({', '.join(TEXT_COLUMNS)}) "
                            "and no input_ids; name them as PATH:TEXT,LABEL")
        tokenizer = _tokenizer(tokenizer_folder, spec, text)
        limit_tokens = min(int(tokenizer.model_max_length or 512), 4096)
        encoded = tokenizer([str(t) for t in part[text]], padding="longest", truncation=True,
                            max_length=limit_tokens, return_tensors="np")
        arrays = {f: np.asarray(encoded[f]) for f in TOKEN_FIELDS if f in encoded}
    if label is not None:
        if label not in names:
            raise UserError(f"{path} has no column {label!r} (it has: {', '.join(names)}); fix the names after ':'")
        arrays["labels"] = np.asarray(part[label])
    data = load_token_arrays(spec, path, list(arrays), lambda key, rows: arrays[key][:rows], split=split,
                             required_by=None, limit=limit, labels_optional=labels_optional)
    return dataclasses.replace(data, split=used)
