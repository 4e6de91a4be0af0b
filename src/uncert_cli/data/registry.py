"""The one table of named datasets, and :func:`load_dataset`, which resolves every spec."""

from __future__ import annotations

import dataclasses
import difflib
import os

from uncert_cli.core.errors import UserError
from uncert_cli.data.checks import whole_number
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.embedded import load_digits_dataset, load_iris_dataset, load_photo_patches, load_toy_regression
from uncert_cli.data.files import load_file_dataset, looks_like_file_spec
from uncert_cli.data.mnist_family import load_emnist_letters, load_fashion_mnist, load_kmnist, load_mnist
from uncert_cli.data.notmnist import load_notmnist
from uncert_cli.data.request import Loader, LoadRequest
from uncert_cli.data.root import data_root
from uncert_cli.data.torchvision_sets import load_cifar10, load_cifar100, load_svhn

# name -> loader. Built-ins read files under the data root; the last three need no files.
REGISTRY: dict[str, Loader] = {
    "mnist": load_mnist,
    "fashionmnist": load_fashion_mnist,
    "kmnist": load_kmnist,
    "emnist-letters": load_emnist_letters,
    "notmnist": load_notmnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "digits": load_digits_dataset,
    "iris": load_iris_dataset,
    "toy-regression": load_toy_regression,
    "photo-patches": load_photo_patches,
}
KNOWN_DATASETS: list[str] = list(REGISTRY)
EMBEDDED_DATASETS: frozenset[str] = frozenset({"digits", "iris", "toy-regression", "photo-patches"})
SPLITS: tuple[str, ...] = ("train", "val", "test")


def unknown_dataset_error(spec: str) -> UserError:
    """``unknown dataset 'mnsit'; did you mean 'mnist'? Known: ...`` (with a file hint)."""
    close = difflib.get_close_matches(spec.lower(), KNOWN_DATASETS, n=3, cutoff=0.6)
    suggestion = f"did you mean {' or '.join(repr(name) for name in close)}? " if close else ""
    return UserError(
        f"unknown dataset '{spec}'; {suggestion}Known: {', '.join(KNOWN_DATASETS)} "
        "(or give a path to a .npz/.h5/.pt file or an image folder)"
    )


def load_dataset(
    spec: str,
    *,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    download: bool = False,
    seed: int = 0,
    split_required_by: str | None = None,
    labels_optional: bool = False,
    tokenizer: str | None = None,
) -> ArrayDataset:
    """Load a dataset by built-in name or file spec.

    Args:
        spec: a name from :data:`KNOWN_DATASETS` (case-insensitive; names win over same-named files,
            write ``./mnist`` for a file), or a file spec (``x.npz``, ``x.h5:images,labels``, ``x.pt``,
            an image folder; see :mod:`uncert_cli.data.files`).
        split: ``"train"`` or ``"test"``; ``"val"`` exists for the embedded sets (digits, iris:
            stratified 70/10/20 train/val/test; toy-regression: a fresh draw). notMNIST returns all of
            its images for any split. A file spec that holds splits (``x_train``/``x_test`` arrays,
            ``train/``/``test/`` folders) gives that split; one without splits is used whole.
        root: data folder for built-ins (see :func:`data_root`).
        limit: keep only the first ``limit`` examples (deterministic).
        download: allow fetching a missing built-in with torchvision (MD5-checked). Never otherwise.
        seed: seeds the embedded sets' split / draw (non-negative).
        split_required_by: who asked for ``split`` (``data.file_splits.split_was_given(split)`` when the caller
            asked for it; ``{param}`` in it names the parameter ``split``): a file without splits is
            then an error; ``None`` (the split is a command's default): such a file is used whole.
        tokenizer: the Hugging Face model folder whose tokenizer reads a saved dataset's text column.
        labels_optional: a file spec may hold inputs alone (``x``/``images``/``inputs`` or a single array);
            its labels are then all 0. For sets whose labels nobody reads (OOD sets).

    Returns:
        An :class:`ArrayDataset`; images are uint8 ``(N, C, H, W)`` (= pixel/255), see :mod:`.dataset`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"no dataset given; pass a name ({', '.join(KNOWN_DATASETS)}) or a file path")
    spec = spec.strip()
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use train or test (or val for {', '.join(sorted(EMBEDDED_DATASETS))})")
    limit = None if limit is None else whole_number(limit, "limit", minimum=1)
    seed = whole_number(seed, "seed", minimum=0)

    loader = REGISTRY.get(spec.lower())
    if loader is not None:
        request = LoadRequest(spec.lower(), split, data_root(root), limit, download, seed)
        return dataclasses.replace(loader(request).take(limit), split=split)
    if looks_like_file_spec(spec):
        return load_file_dataset(spec, limit=limit, split=split, split_required_by=split_required_by,
                                 labels_optional=labels_optional, tokenizer=tokenizer)
    raise unknown_dataset_error(spec)
