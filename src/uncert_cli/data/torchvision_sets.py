"""CIFAR-10, CIFAR-100 and SVHN, read (and with --download fetched) by torchvision's own classes.

CIFAR files are python pickles; torchvision unpickles them after checking their MD5 against its
table, which is acceptable for these well-known dataset files (never for checkpoints).
Layouts: ``<root>/cifar-10-batches-py/`` (or ``<root>/CIFAR10/cifar-10-batches-py/``),
``<root>/cifar-100-python/`` (or under ``<root>/CIFAR100/``), ``<root>/SVHN/<split>_32x32.mat`` (or
``<root>/<split>_32x32.mat``). Images come out as uint8 ``(N, 3, 32, 32)`` (= pixel/255).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.download import download_with_torchvision
from uncert_cli.data.locate import FileSet, find_folder, missing_files_error
from uncert_cli.data.request import LoadRequest


def _require_train_or_test(request: LoadRequest) -> None:
    if request.split not in ("train", "test"):
        raise UserError(
            f"dataset '{request.name}' has splits train and test, not '{request.split}'; pass {{param}} train or {{param}} test",
            param="split",
        )


def _construct(dataset: str, make: Callable[[], Any]) -> Any:
    """Build a torchvision dataset from files already present; its integrity errors become UserErrors."""
    try:
        return make()
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise UserError(
            f"the '{dataset}' files failed torchvision's checksum ({err}); delete them and rerun with {{param}}",
            param="download",
        ) from err


def _locate_or_download(
    request: LoadRequest, search_dirs: list[Path], file_set: FileSet, download_dir: Path, fetch: Callable[[], object]
) -> Path:
    """The folder of ``search_dirs`` holding ``file_set`` (downloading into ``download_dir`` if asked)."""
    folder = find_folder(search_dirs, file_set)
    if folder is None and request.download:
        download_with_torchvision(request.name, download_dir, fetch)
        folder = find_folder(search_dirs, file_set)
    if folder is None:
        raise missing_files_error(request.name, request.split, [file_set], search_dirs, request.root)
    return folder


def _load_cifar(
    request: LoadRequest, class_name: str, base_folder: str, train_files: list[str], test_files: list[str], meta: str
) -> ArrayDataset:
    _require_train_or_test(request)
    train = request.split == "train"
    # torchvision checks every batch file (both splits) before it loads either, so all are required.
    file_set: FileSet = {name: (f"{base_folder}/{name}",) for name in [*train_files, *test_files, meta]}
    search_dirs = [request.root, request.root / class_name]

    def make(root: Path, download: bool) -> Any:
        import torchvision.datasets as tv_datasets  # lazy: importing torchvision takes a second

        return getattr(tv_datasets, class_name)(str(root), train=train, download=download)

    folder = _locate_or_download(request, search_dirs, file_set, request.root, lambda: make(request.root, True))
    tv_dataset = _construct(request.name, lambda: make(folder, False))
    images = tv_dataset.data[: request.limit].transpose(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32) uint8
    labels = np.asarray(tv_dataset.targets, dtype=np.int64)[: request.limit]
    return dataset_from_arrays(request.name, images, labels, class_names=list(tv_dataset.classes))


def load_cifar10(request: LoadRequest) -> ArrayDataset:
    """CIFAR-10: 50,000 train / 10,000 test colour images, 10 classes."""
    return _load_cifar(
        request, "CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"
    )


def load_cifar100(request: LoadRequest) -> ArrayDataset:
    """CIFAR-100 (fine labels): 50,000 train / 10,000 test colour images, 100 classes."""
    return _load_cifar(request, "CIFAR100", "cifar-100-python", ["train"], ["test"], "meta")


def load_svhn(request: LoadRequest) -> ArrayDataset:
    """SVHN (cropped digits): 73,257 train / 26,032 test colour images; digit 0 is label 0."""
    _require_train_or_test(request)
    file_name = f"{request.split}_32x32.mat"
    search_dirs = [request.root / "SVHN", request.root]

    def make(root: Path, download: bool) -> Any:
        import torchvision.datasets as tv_datasets

        return tv_datasets.SVHN(str(root), split=request.split, download=download)

    download_dir = request.root / "SVHN"
    folder = _locate_or_download(request, search_dirs, {"mat": (file_name,)}, download_dir, lambda: make(download_dir, True))
    tv_dataset = _construct(request.name, lambda: make(folder, False))
    images = tv_dataset.data[: request.limit]  # already (N, 3, 32, 32) uint8
    labels = np.asarray(tv_dataset.labels, dtype=np.int64)[: request.limit]
    return dataset_from_arrays(request.name, images, labels, class_names=[str(d) for d in range(10)])
