"""A data folder with only a dataset's test files: the error for the train split says to pass --split test.

The shared data of this project is laid out so (FashionMNIST and KMNIST hold their test files only), and
``uncert fit model --data fashionmnist`` said only "not found ... pass --download".
"""

from __future__ import annotations

import struct

import numpy as np


def _write_idx(path, array: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def test_a_missing_train_split_suggests_the_test_split_that_is_there(run_cli, digits_checkpoint, tmp_path):
    folder = tmp_path / "data" / "FashionMNIST"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 16))
    fit = ["fit", digits_checkpoint, "--data", "fashionmnist", "--data-root", tmp_path / "data", "--resize", "8,8",
           "--method", "diag", "-o", tmp_path / "f.h5"]
    code, _, err = run_cli(*fit)
    assert code == 2, err
    assert "only its test split is there: pass --split test" in err and "--download" in err, err
    code, _, err = run_cli(*fit, "--split", "test", "--quiet")  # the advice works
    assert code == 0, err


def test_without_the_other_split_there_is_no_such_advice(run_cli, digits_checkpoint, tmp_path):
    (tmp_path / "data").mkdir()
    code, _, err = run_cli("fit", digits_checkpoint, "--data", "fashionmnist", "--data-root", tmp_path / "data",
                           "-o", tmp_path / "f.h5")
    assert code == 2 and "not found" in err and "--split" not in err, err
