"""MNIST, FashionMNIST, KMNIST and EMNIST-letters: 28x28 grayscale idx (or KMNIST npz) files.

Both torchvision's layout (``<root>/MNIST/raw/<file>``) and the flat one (``<root>/MNIST/<file>``)
are accepted; each file may be gzipped (``<file>.gz``) or not. The result is uint8 ``(N, 1, 28, 28)``
images (= pixel/255) and int64 labels.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import check_input_file
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.declared import NPZ_READ_ERRORS
from uncert_cli.data.download import download_with_torchvision
from uncert_cli.data.idx import read_idx
from uncert_cli.data.locate import FileSet, find_file_set, missing_files_error
from uncert_cli.data.request import LoadRequest


@dataclass(frozen=True)
class IdxDatasetInfo:
    """How one MNIST-like dataset is laid out on disk."""

    folder: str  # folder under the data root, named as torchvision names it
    train_prefix: str  # file name prefix of the train split, e.g. "train"
    test_prefix: str
    class_names: tuple[str, ...]
    torchvision_class: str  # class in torchvision.datasets used for --download
    label_offset: int = 0  # subtracted from stored labels (EMNIST letters are stored as 1..26)
    transposed: bool = False  # EMNIST stores each image transposed relative to MNIST
    npz_prefix: str | None = None  # KMNIST's official npz release: "<prefix>-<split>-imgs.npz"

    def search_dirs(self, root: Path) -> list[Path]:
        return [root / self.folder / "raw", root / self.folder]

    def file_sets(self, split: str) -> list[FileSet]:
        prefix = self.train_prefix if split == "train" else self.test_prefix
        images = f"{prefix}-images-idx3-ubyte"
        labels = f"{prefix}-labels-idx1-ubyte"
        idx_set: FileSet = {"images": (images, images + ".gz"), "labels": (labels, labels + ".gz")}
        if self.npz_prefix is None:
            return [idx_set]
        npz_split = "train" if split == "train" else "test"
        npz_set: FileSet = {
            "images": (f"{self.npz_prefix}-{npz_split}-imgs.npz",),
            "labels": (f"{self.npz_prefix}-{npz_split}-labels.npz",),
        }
        return [npz_set, idx_set]


MNIST_INFO = IdxDatasetInfo("MNIST", "train", "t10k", tuple(string.digits), "MNIST")
FASHION_MNIST_INFO = IdxDatasetInfo(
    "FashionMNIST",
    "train",
    "t10k",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "FashionMNIST",
)
# Romanised names of the ten Kuzushiji hiragana, in label order (as in the official kmnist_classmap.csv).
KMNIST_INFO = IdxDatasetInfo(
    "KMNIST", "train", "t10k", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "KMNIST", npz_prefix="kmnist"
)
# EMNIST letters merges upper and lower case into 26 classes; stored labels are 1..26.
EMNIST_LETTERS_INFO = IdxDatasetInfo(
    "EMNIST",
    "emnist-letters-train",
    "emnist-letters-test",
    tuple(string.ascii_lowercase),
    "EMNIST",
    label_offset=1,
    transposed=True,
)


def _read_npz_array(path: Path, limit: int | None) -> np.ndarray:
    check_input_file(path, "dataset file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            array = archive["arr_0"]
    except NPZ_READ_ERRORS + (KeyError,) as err:
        raise UserError(f"cannot read {path} ({err}); expected numpy's npz with key arr_0, re-download it") from err
    return array if limit is None else array[:limit]


def _fetch(info: IdxDatasetInfo, request: LoadRequest) -> None:
    def fetch() -> object:
        import torchvision.datasets as tv_datasets  # imported lazily: torchvision takes a second to import

        dataset_class = getattr(tv_datasets, info.torchvision_class)
        if info.torchvision_class == "EMNIST":
            return dataset_class(str(request.root), split="letters", train=request.split == "train", download=True)
        return dataset_class(str(request.root), train=request.split == "train", download=True)

    download_with_torchvision(request.name, request.root / info.folder / "raw", fetch)


def load_idx_dataset(info: IdxDatasetInfo, request: LoadRequest) -> ArrayDataset:
    """Load one split of an MNIST-like dataset as uint8 ``(N, 1, 28, 28)`` images and int64 labels."""
    if request.split not in ("train", "test"):
        raise UserError(
            f"dataset '{request.name}' has splits train and test, not '{request.split}'; pass {{param}} train or {{param}} test",
            param="split",
        )
    search_dirs = info.search_dirs(request.root)
    file_sets = info.file_sets(request.split)
    located = next((found for fs in file_sets if (found := find_file_set(search_dirs, fs)) is not None), None)
    if located is None and request.download:
        _fetch(info, request)
        located = next((found for fs in file_sets if (found := find_file_set(search_dirs, fs)) is not None), None)
    if located is None:
        other = "test" if request.split == "train" else "train"
        present = any(find_file_set(search_dirs, fs) is not None for fs in info.file_sets(other))
        raise missing_files_error(request.name, request.split, file_sets, search_dirs, request.root,
                                  present_split=other if present else None)

    if located["images"].suffix == ".npz":
        images = _read_npz_array(located["images"], request.limit)
        labels = _read_npz_array(located["labels"], request.limit)
    else:
        images = read_idx(located["images"], request.limit)
        labels = read_idx(located["labels"], request.limit)
    if images.ndim != 3:
        raise UserError(
            f"{located['images']} holds shape {images.shape}, not (N, H, W) images; re-download it with {{param}}",
            param="download",
        )
    if info.transposed:
        images = images.transpose(0, 2, 1)
    labels = labels.astype(np.int64) - info.label_offset
    return dataset_from_arrays(request.name, images, labels, class_names=info.class_names)


def load_mnist(request: LoadRequest) -> ArrayDataset:
    """MNIST: 60,000 train / 10,000 test handwritten digits."""
    return load_idx_dataset(MNIST_INFO, request)


def load_fashion_mnist(request: LoadRequest) -> ArrayDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test Zalando article images, 10 classes."""
    return load_idx_dataset(FASHION_MNIST_INFO, request)


def load_kmnist(request: LoadRequest) -> ArrayDataset:
    """Kuzushiji-MNIST: 60,000 train / 10,000 test cursive hiragana, from the official npz or idx files."""
    return load_idx_dataset(KMNIST_INFO, request)


def load_emnist_letters(request: LoadRequest) -> ArrayDataset:
    """EMNIST letters: 124,800 train / 20,800 test, labels a..z as 0..25, images turned upright."""
    return load_idx_dataset(EMNIST_LETTERS_INFO, request)
