"""Built-in datasets against the genuine files (facts from SOURCES.md), layouts, and offline errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from uncert_cli.data import load_dataset
from uncert_cli.errors import UserError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

needs_shared_data = pytest.mark.shared_data  # marker declared in pyproject.toml


@needs_shared_data
def test_mnist_test_split_matches_published_facts(shared_data_root: Path) -> None:
    ds = load_dataset("mnist", split="test", root=shared_data_root)
    assert len(ds) == 10_000
    assert ds.sample_shape == (1, 28, 28)
    assert ds.task == "classification" and ds.num_classes == 10
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.targets.dtype == torch.int64
    assert torch.bincount(ds.targets).tolist() == MNIST_TEST_COUNTS
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0  # uint8 255 -> exactly 1.0
    assert int(y) == 7  # the famous first test digit


@needs_shared_data
def test_mnist_train_has_60000_with_published_counts(mnist_train) -> None:
    assert len(mnist_train) == 60_000
    assert torch.bincount(mnist_train.targets).tolist() == MNIST_TRAIN_COUNTS
    assert int(mnist_train.targets[0]) == 5


@needs_shared_data
def test_limit_takes_the_first_examples(shared_data_root: Path, mnist_train) -> None:
    first = load_dataset("mnist", split="train", root=shared_data_root, limit=100)
    assert len(first) == 100
    assert torch.equal(first.inputs, mnist_train.inputs[:100])
    assert torch.equal(first.targets, mnist_train.targets[:100])


@needs_shared_data
def test_fashion_mnist_test(shared_data_root: Path) -> None:
    ds = load_dataset("fashionmnist", split="test", root=shared_data_root)
    assert len(ds) == 10_000 and ds.sample_shape == (1, 28, 28)
    assert torch.bincount(ds.targets).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


@needs_shared_data
def test_kmnist_test_from_official_npz(shared_data_root: Path) -> None:
    ds = load_dataset("kmnist", split="test", root=shared_data_root)
    assert len(ds) == 10_000 and ds.sample_shape == (1, 28, 28)
    assert torch.bincount(ds.targets).tolist() == [1000] * 10
    assert ds.class_names == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


@needs_shared_data
def test_kmnist_idx_form_equals_npz_form(shared_data_root: Path, tmp_path: Path, write_idx) -> None:
    with np.load(shared_data_root / "KMNIST" / "kmnist-test-imgs.npz") as archive:
        images = archive["arr_0"][:50]
    with np.load(shared_data_root / "KMNIST" / "kmnist-test-labels.npz") as archive:
        labels = archive["arr_0"][:50]
    write_idx(tmp_path / "KMNIST" / "raw" / "t10k-images-idx3-ubyte", images, compress=True)
    write_idx(tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    from_idx = load_dataset("kmnist", split="test", root=tmp_path)
    from_npz = load_dataset("kmnist", split="test", root=shared_data_root, limit=50)
    assert torch.equal(from_idx.inputs, from_npz.inputs)
    assert torch.equal(from_idx.targets, from_npz.targets)


@needs_shared_data
def test_notmnist_npz_has_all_letters(shared_data_root: Path) -> None:
    for split in ("train", "test"):  # no official split: both give every image
        ds = load_dataset("notmnist", split=split, root=shared_data_root)
        assert len(ds) == 18_724
    assert ds.class_names == list("ABCDEFGHIJ")
    assert ds.sample_shape == (1, 28, 28)
    assert torch.bincount(ds.targets).tolist() == [1872, 1873, 1873, 1873, 1873, 1872, 1872, 1872, 1872, 1872]


def test_notmnist_png_folder_skips_unreadable_files(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "notMNIST_small"
    for index, letter in enumerate("ABCDEFGHIJ"):
        (folder / letter).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), index * 20, dtype=np.uint8)).save(folder / letter / "glyph.png")
    (folder / "A" / "empty.png").write_bytes(b"")  # like the two broken files of the original archive
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_dataset("notmnist", split="test", root=tmp_path)
    assert len(ds) == 10 and ds.class_names == list("ABCDEFGHIJ")
    assert ds.targets.tolist() == list(range(10))
    assert int(ds.inputs[3].max()) == 60


@needs_shared_data
def test_torchvision_layout_and_plain_idx_give_the_same_data(shared_data_root: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").symlink_to(shared_data_root / "MNIST" / "t10k-images-idx3-ubyte.gz")
    # torchvision also leaves decompressed copies; read those too.
    with gzip.open(shared_data_root / "MNIST" / "t10k-labels-idx1-ubyte.gz") as source, open(raw / "t10k-labels-idx1-ubyte", "wb") as target:
        shutil.copyfileobj(source, target)
    torchvision_layout = load_dataset("mnist", split="test", root=tmp_path)
    flat_layout = load_dataset("mnist", split="test", root=shared_data_root)
    assert torch.equal(torchvision_layout.inputs, flat_layout.inputs)
    assert torch.equal(torchvision_layout.targets, flat_layout.targets)


def test_emnist_letters_are_shifted_to_zero_and_turned_upright(tmp_path: Path, write_idx) -> None:
    stored = np.zeros((2, 28, 28), dtype=np.uint8)
    stored[:, 0, 5] = 255  # EMNIST stores images transposed: this pixel belongs at row 5, column 0
    write_idx(tmp_path / "EMNIST" / "raw" / "emnist-letters-test-images-idx3-ubyte", stored)
    write_idx(tmp_path / "EMNIST" / "raw" / "emnist-letters-test-labels-idx1-ubyte", np.array([1, 26], dtype=np.uint8))
    ds = load_dataset("emnist-letters", split="test", root=tmp_path)
    assert ds.targets.tolist() == [0, 25]
    assert ds.num_classes == 26 and ds.class_names[0] == "a" and ds.class_names[25] == "z"
    assert int(ds.inputs[0, 0, 5, 0]) == 255 and int(ds.inputs[0, 0, 0, 5]) == 0


@pytest.mark.parametrize(
    ("name", "expected_files"),
    [
        ("cifar10", ["cifar-10-batches-py/{", "test_batch", "data_batch_5", "batches.meta"]),
        ("cifar100", ["cifar-100-python/{", "test", "meta"]),
        ("svhn", ["test_32x32.mat"]),
        ("emnist-letters", ["emnist-letters-test-images-idx3-ubyte", "emnist-letters-test-labels-idx1-ubyte"]),
        ("mnist", ["t10k-images-idx3-ubyte[.gz]"]),
    ],
)
def test_missing_files_error_names_files_folders_and_fixes(tmp_path: Path, name: str, expected_files: list[str]) -> None:
    with pytest.raises(UserError) as caught:
        load_dataset(name, split="test", root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for file_name in expected_files:
        assert file_name in message
    assert str(tmp_path) in message
    # The library names its own parameters (the CLI shows them as --download and --data-root).
    assert "pass download" in message and "set root" in message and "UNCERT_DATA" in message
    assert caught.value.params == ("root", "download")


def test_notmnist_missing_says_it_cannot_be_downloaded(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="notMNIST_small.npz.*cannot download notMNIST"):
        load_dataset("notmnist", split="test", root=tmp_path, download=True)


def test_builtins_reject_val_split(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train and test"):
        load_dataset("mnist", split="val", root=tmp_path)


def test_corrupt_idx_file_is_a_user_error(tmp_path: Path, write_idx) -> None:
    raw = tmp_path / "MNIST"
    raw.mkdir()
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([1], dtype=np.uint8))
    with pytest.raises(UserError, match="not an idx file"):
        load_dataset("mnist", split="test", root=tmp_path)


def test_cifar_files_failing_torchvision_checksum_are_a_user_error(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (batches / name).write_bytes(b"junk")  # never unpickled: torchvision checks the MD5 first
    with pytest.raises(UserError, match="failed torchvision's checksum.*rerun with download"):
        load_dataset("cifar10", split="test", root=tmp_path)
