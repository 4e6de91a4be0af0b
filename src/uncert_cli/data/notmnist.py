"""notMNIST_small: 18,724 glyphs of the letters A..J in 28x28 grayscale (Bulatov, 2011).

It has no train/test split, so every split returns all images (it is used as an out-of-distribution
test set for MNIST models). Accepted forms, searched in ``<root>/notMNIST`` then ``<root>``:
``notMNIST_small.npz`` (keys ``images`` uint8 (N,28,28) and ``labels`` 0..9) or a
``notMNIST_small/`` folder of PNGs with subfolders ``A``..``J``.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import check_input_file
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.declared import NPZ_READ_ERRORS
from uncert_cli.data.image_folder import load_image_folder
from uncert_cli.data.request import LoadRequest

NOTMNIST_CLASSES = tuple(string.ascii_uppercase[:10])  # A..J
NPZ_NAME = "notMNIST_small.npz"
FOLDER_NAME = "notMNIST_small"


def load_notmnist(request: LoadRequest) -> ArrayDataset:
    """All of notMNIST_small (any split): uint8 ``(N, 1, 28, 28)`` images, labels 0..9 = A..J."""
    if request.split not in ("train", "test", "val"):
        raise UserError(
            f"unknown split '{request.split}' for notmnist; pass {{param}} test (notMNIST has one set of images)", param="split"
        )
    search_dirs = [request.root / "notMNIST", request.root]
    for folder in search_dirs:
        npz_path = folder / NPZ_NAME
        if npz_path.is_file():
            return _load_npz(npz_path, request)
        image_dir = folder / FOLDER_NAME
        if image_dir.is_dir():
            # The original archive holds two empty PNGs; skipping unreadable files matches the usual 18,724.
            ds = load_image_folder(image_dir, request.name, limit=request.limit, skip_unreadable=True)
            if ds.class_names != list(NOTMNIST_CLASSES):
                raise UserError(f"{image_dir} has subfolders {ds.class_names}, expected A..J; remove the extra folders")
            return ds
    folders = ", ".join(str(d) for d in search_dirs)
    download_note = "torchvision cannot download notMNIST; " if request.download else ""
    raise UserError(
        f"dataset 'notmnist' not found: expected {NPZ_NAME} or a {FOLDER_NAME}/ folder of PNGs (subfolders A..J) "
        f"in one of: {folders}; {download_note}get notMNIST_small by hand, then point {{param}} or $UNCERT_DATA at it",
        param="root",
    )


def _load_npz(path: Path, request: LoadRequest) -> ArrayDataset:
    check_input_file(path, "dataset file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images = archive["images"][: request.limit]
            labels = archive["labels"][: request.limit]
    except NPZ_READ_ERRORS + (KeyError,) as err:
        raise UserError(f"cannot read {path} ({err}); expected an npz with keys images and labels") from err
    return dataset_from_arrays(request.name, images, labels, class_names=NOTMNIST_CLASSES)
