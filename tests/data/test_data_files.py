"""User files: npz, HDF5, .pt and image folders, with the shared layout/dtype rules."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uncert_cli.data import load_dataset
from uncert_cli.errors import UserError


def _images(n: int = 6, height: int = 5, width: int = 4) -> np.ndarray:
    return np.arange(n * height * width, dtype=np.uint8).reshape(n, height, width)


def test_npz_with_x_y_keys_uint8_images(tmp_path: Path) -> None:
    path = tmp_path / "digits.npz"
    np.savez(path, x=_images(), y=np.array([0, 1, 2, 0, 1, 2]))
    ds = load_dataset(str(path))
    assert ds.name == str(path)
    assert ds.sample_shape == (1, 5, 4)  # (N, H, W) -> (N, 1, H, W)
    assert ds.task == "classification" and ds.num_classes == 3 and ds.class_names is None
    x, y = ds[1]
    assert x.dtype == torch.float32 and torch.allclose(x.flatten(), torch.arange(20, 40, dtype=torch.float32) / 255)
    assert y.dtype == torch.int64 and int(y) == 1


def test_npz_with_images_labels_keys_channel_last_and_limit(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, images=rgb, labels=np.arange(5))
    ds = load_dataset(str(path), limit=3)
    assert len(ds) == 3 and ds.sample_shape == (3, 6, 7)  # (N, H, W, 3) -> (N, 3, H, W)
    assert torch.equal(ds.inputs[2, :, 4, 5], torch.from_numpy(rgb[2, 4, 5]))


def test_npz_float_targets_mean_regression(tmp_path: Path) -> None:
    path = tmp_path / "reg.npz"
    np.savez(path, x=np.linspace(0, 1, 8).reshape(8, 1), y=np.linspace(-1, 1, 8))
    ds = load_dataset(str(path))
    assert ds.task == "regression" and ds.num_classes is None
    assert ds.inputs.dtype == torch.float32 and ds.targets.shape == (8, 1) and ds.targets.dtype == torch.float32


def test_npz_with_unknown_keys_lists_what_it_has(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    np.savez(path, features=np.zeros((2, 3)), classes=np.zeros(2, dtype=int))
    with pytest.raises(UserError, match=r"has arrays features, classes.*odd.npz:INPUTS,LABELS"):
        load_dataset(str(path))
    ds = load_dataset(f"{path}:features,classes")
    assert ds.sample_shape == (3,)


def test_hdf5_default_and_named_datasets(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as h5:
        h5["images"] = _images()
        h5["labels"] = np.array([3, 1, 4, 1, 5, 9], dtype=np.int32)
        h5.create_group("other")
        h5["other/features"] = np.ones((6, 2), dtype=np.float64)
        h5["other/values"] = np.arange(6, dtype=np.float32)
    default = load_dataset(str(path))
    assert default.sample_shape == (1, 5, 4) and default.num_classes == 10
    assert default.targets.tolist() == [3, 1, 4, 1, 5, 9]
    named = load_dataset(f"{path}:other/features,other/values", limit=4)
    assert named.task == "regression" and len(named) == 4 and named.sample_shape == (2,)
    with pytest.raises(UserError, match="no array named 'nope'"):
        load_dataset(f"{path}:images,nope")


def test_pt_dict_and_tuple(tmp_path: Path) -> None:
    inputs, labels = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    torch.save({"x": inputs, "y": labels}, tmp_path / "dict.pt")
    torch.save((inputs, labels), tmp_path / "pair.pt")
    for name in ("dict.pt", "pair.pt"):
        ds = load_dataset(str(tmp_path / name))
        assert ds.sample_shape == (3, 2, 2) and torch.equal(ds.inputs, inputs) and ds.targets.tolist() == [0, 1, 1, 0]


def test_pt_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(2, 2), "y": Fraction(1, 3)}, path)  # any non-allowlisted class will do
    with pytest.raises(UserError, match="weights_only=True"):
        load_dataset(str(path))


def test_image_folder_classes_are_sorted_subfolders(tmp_path: Path) -> None:
    from PIL import Image

    for class_name, value in (("dog", 200), ("cat", 100)):
        (tmp_path / "pets" / class_name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(np.full((6, 5, 3), value + index, dtype=np.uint8)).save(tmp_path / "pets" / class_name / f"{index}.png")
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.targets.tolist() == [0, 0, 1, 1]
    assert ds.sample_shape == (3, 6, 5)
    assert int(ds.inputs[3, 0, 0, 0]) == 201


def test_image_folder_with_mixed_sizes_says_resize(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a" / "small.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a" / "tall.png")
    with pytest.raises(UserError, match="differ in size.*resize"):
        load_dataset(str(tmp_path))


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_dataset(str(tmp_path / "absent.npz"))
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(UserError, match="unsupported data file type '.csv'"):
        load_dataset(str(tmp_path / "table.csv"))


def test_mismatched_lengths_and_one_hot_labels_are_user_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "short.npz", x=np.zeros((3, 2)), y=np.zeros(2, dtype=int))
    with pytest.raises(UserError, match="3 inputs but 2 labels"):
        load_dataset(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "onehot.npz", x=np.zeros((3, 2)), y=np.eye(3, dtype=int))
    with pytest.raises(UserError, match="not one-hot"):
        load_dataset(str(tmp_path / "onehot.npz"))
